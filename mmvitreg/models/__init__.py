from . import backbones, detectors, heads, layers, losses  # noqa: F401
from . import task_modules  # noqa: F401,E402  (HOI match costs/assigner in mmdet TASK_UTILS)
from .regularized import (REGULARIZERS, Regularized, apply_regularizers, extend_class,
                          register_regularizer)

__all__ = ['REGULARIZERS', 'Regularized', 'apply_regularizers', 'extend_class',
           'register_regularizer']
