"""Tiny hosts shared by the regularizer tests (CPU, a few thousand parameters)."""
import copy
from typing import Iterator, List, Tuple

import torch.nn as nn

from mmvitreg.regularizers.attention import find_attention_modules

TINY_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
TINY_VIT = dict(type='VisionTransformer', arch=TINY_ARCH, img_size=16, patch_size=4,
                drop_path_rate=0.0)
VIT_HEAD = dict(type='VisionTransformerClsHead', num_classes=5, in_channels=32)


def vit_classifier_cfg(**regularizers) -> dict:
    """A tiny ViT classifier config; regularizer keys make it a ``Regularized`` one."""
    cfg = dict(type='ImageClassifier', backbone=copy.deepcopy(TINY_VIT), head=dict(VIT_HEAD))
    if regularizers:
        cfg = dict(cfg, type='Regularized', host='ImageClassifier', **regularizers)
    return cfg


def cls_samples(n: int) -> list:
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % 5) for i in range(n)]


def attention_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return find_attention_modules(model)


def routed_sites(model: nn.Module) -> Iterator[Tuple[str, nn.Module, object]]:
    """``(module path, module, site)`` of every site installed anywhere in ``model``."""
    from mmvitreg.regularizers.site import Site
    for name, mod in model.named_modules():
        for value in vars(mod).values():
            if isinstance(value, Site):
                yield name, mod, value
