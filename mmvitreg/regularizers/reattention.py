"""Kept import path (and pickles of ``HeadMixing``): the ``reattention`` key lives in
:mod:`mmvitreg.regularizers.stages.reattention`."""
from .stages.reattention import (CHILD, HeadMixing, ReattentionStage,  # noqa: F401
                                 attach_reattention, reattend, reattention_layer_indices,
                                 select_layers)

__all__ = ['reattend', 'HeadMixing', 'attach_reattention', 'select_layers',
           'reattention_layer_indices']
