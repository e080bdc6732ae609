"""How regularization mechanisms reach built host models (see ``docs/DESIGN.md``).

* :mod:`.site` - a *site* routes one method of one host instance through mmvitreg;
* :mod:`.attention` - attention sites and the composition rule of attention mechanisms;
  :mod:`.hosts` - the sites of timm, mmpretrain and mmcv attention classes;
* :mod:`.model` - loss terms added to a model's ``loss``, Monte-Carlo ``predict``;
* :mod:`.registry` - the keys of ``Regularized``; one file per key: :mod:`.dropkey`,
  :mod:`.reattention`, :mod:`.drloc`.

This package imports with torch and timm alone (the DropKey and Re-attention keys and the timm
attention site); :mod:`mmvitreg.models` adds the OpenMMLab pieces.
"""
from .registry import REGULARIZERS, apply_regularizers, register_regularizer
from . import dropkey, reattention  # noqa: F401,E402  (register their keys)
from .hosts import timm as _timm_sites  # noqa: F401,E402

__all__ = ['REGULARIZERS', 'apply_regularizers', 'register_regularizer']
