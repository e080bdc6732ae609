from . import hooks  # noqa: F401
from .optim_wrapper import AutocastOptimWrapper

__all__ = ['AutocastOptimWrapper']
