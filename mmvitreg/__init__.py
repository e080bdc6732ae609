"""mmvitreg: Vision-Transformer regularizers for the OpenMMLab 2.x toolboxes.

``import mmvitreg`` (or ``custom_imports=dict(imports=['mmvitreg'])`` in a config) registers every
mmvitreg type in both the mmpretrain and the mmdet registries; see :mod:`mmvitreg.registry`.

The mechanisms' functional cores (:mod:`mmvitreg.ops`) and the torch/timm part of the attachment
layer (:mod:`mmvitreg.regularizers`) need torch (and timm) only; the OpenMMLab layer is imported
when mmengine is installed, so ``import mmvitreg.ops.dropkey`` also works on a machine without
OpenMMLab (e.g. for ``benchmarks/gpu_acceptance.py``).
"""
import importlib.util

from .version import __version__

if importlib.util.find_spec('mmengine') is not None:
    from .compat import enable_mmvitreg_config_paths, install_checkpoint_loader

    install_checkpoint_loader()  # safe by default; see mmvitreg/utils/checkpoint.py
    enable_mmvitreg_config_paths()  # `_base_ = 'mmvitreg::dir/file.py'`

    from . import (datasets, engine, evaluation, models,  # noqa: E402,F401  (registration)
                   visualization)

__all__ = ['__version__']
