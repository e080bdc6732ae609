"""Attention sites of host libraries (one file per library).

``timm`` needs torch and timm only; ``mmpretrain`` and ``mmcv`` are imported by
:mod:`mmvitreg.models` with the rest of the OpenMMLab layer.
"""
