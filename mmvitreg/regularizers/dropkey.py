"""Kept import path: the ``dropkey`` key lives in :mod:`mmvitreg.regularizers.stages.dropkey`."""
from .stages.dropkey import CHILD, DropKeyStage, attach_dropkey, extra_tokens_of  # noqa: F401

__all__ = ['attach_dropkey', 'extra_tokens_of']
