from . import hooks  # noqa: F401
from .optim_wrapper import AutocastOptimWrapper
from .param_scheduler import OffsetCosineAnnealingLR

__all__ = ['AutocastOptimWrapper', 'OffsetCosineAnnealingLR']
