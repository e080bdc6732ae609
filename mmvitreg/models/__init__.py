from . import backbones, detectors, heads, layers, losses  # noqa: F401
from .regularized import (REGULARIZERS, Regularized, apply_regularizers, extend_class,
                          register_regularizer)

__all__ = ['REGULARIZERS', 'Regularized', 'apply_regularizers', 'extend_class',
           'register_regularizer']
