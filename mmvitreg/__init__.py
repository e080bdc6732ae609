"""mmvitreg: Vision-Transformer regularizers for the OpenMMLab 2.x toolboxes.

``import mmvitreg`` (or ``custom_imports=dict(imports=['mmvitreg'])`` in a config) registers every
mmvitreg type in both the mmpretrain and the mmdet registries; see :mod:`mmvitreg.registry`.
"""
from .version import __version__
from .compat import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

from . import datasets, engine, evaluation, models  # noqa: E402,F401  (registration)

__all__ = ['__version__']
