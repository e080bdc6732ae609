"""How regularization mechanisms reach built host models (see ``docs/DESIGN.md``).

* :mod:`.site` - a *site* routes one method of one host instance through mmvitreg;
* :mod:`.attention` - attention sites and :func:`~.attention.attend`, which composes the
  attention stages (:mod:`.stage`) of a host by phase; :mod:`.grid` - where the keys lie;
  :mod:`.hosts` - the sites of timm, mmpretrain and mmcv attention classes;
* :mod:`.stages` - the attention mechanisms, one file each (DropKey, Re-attention, attention
  dropout): child module, stage and ``Regularized`` key;
* :mod:`.model` - loss terms added to a model's ``loss``, captured sub-module outputs,
  Monte-Carlo ``predict``; the loss keys :mod:`.drloc`, :mod:`.attention_cosine`;
* :mod:`.registry` - the keys of ``Regularized``; :mod:`.pairing` - what a key adds leaves the
  host's random stream alone (a variant stays paired by seed with its baseline).

This package imports with torch and timm alone (the attention mechanisms, the attention-cosine
key and the timm attention site); :mod:`mmvitreg.models` adds the OpenMMLab pieces (mmpretrain
and mmcv sites, the DRLoc key).
Nothing here imports :mod:`mmvitreg.models`.
"""
from . import attention_cosine  # noqa: F401,E402  (registers its key)
from . import stages  # noqa: F401,E402  (registers the attention mechanisms' stages and keys)
from .hosts import timm as _timm_sites  # noqa: F401,E402
from .registry import REGULARIZERS, apply_regularizers, register_regularizer

__all__ = ['REGULARIZERS', 'apply_regularizers', 'register_regularizer']
