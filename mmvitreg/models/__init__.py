# The OpenMMLab layer: registered models, plus the regularizer pieces that need OpenMMLab (the
# attention sites of mmpretrain and mmcv hosts, the DRLoc key, the DropKey registry entry).
# Imports go one way: models -> regularizers, never back.
from mmvitreg.regularizers import drloc as _drloc_key  # noqa: F401,E402
from mmvitreg.regularizers.hosts import mmcv as _mmcv_sites  # noqa: F401
from mmvitreg.regularizers.hosts import mmpretrain as _mmpretrain_sites  # noqa: F401
from . import digit_pretrained  # noqa: F401  (the digits:// checkpoint scheme)
from . import dropkey  # noqa: F401  (registers the DropKey type)
from . import task_modules  # noqa: F401,E402  (HOI match costs/assigner in mmdet TASK_UTILS)
from . import backbones, detectors, heads, layers, losses  # noqa: F401
from .regularized import Regularized, build_regularized  # noqa: E402

__all__ = ['Regularized', 'build_regularized']
