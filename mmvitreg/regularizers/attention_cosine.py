"""The ``attention_cosine`` key of ``Regularized``: DeepViT's cosine regularizer across layers.

Zhou et al. 2021 (DeepViT), official ``SoftTargetCrossEntropyCosReg`` with ``cos_reg_component``
(the DeepViT-32B recipe uses 12). The maths is
:func:`mmvitreg.ops.attention_cosine.attention_cosine_loss`; this file records, during
the host's ``loss``, the map each of the first ``component + 1`` attention layers multiplies with
``V`` (after softmax, attention dropout and, in Re-attention layers, the head mixing; with
gradients and DropKey on) and adds ``loss_attention_cosine``. The recorded layers compute their
attention explicitly during training (the map is materialised, as in the official code);
evaluation is untouched.

Config::

    model = dict(type='Regularized', host='ImageClassifier', backbone=..., head=...,
                 attention_cosine=dict(weight=0.1, component=12))
"""
from typing import Dict, List

import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.attention_cosine import OFFICIAL_WEIGHT, attention_cosine_loss
from .attention import AttentionRecorder, find_attention_modules, install_attention_site
from .model import LossTerm, add_loss_term
from .registry import (SummaryRow, check_finite_weight, check_options, check_positive_int,
                       register_regularizer)

__all__ = ['AttentionCosineTerm', 'attach_attention_cosine']

CHILD = 'attention_cosine'


class AttentionCosineTerm(LossTerm):
    """The ``attention_cosine`` child: records the maps of its layers' sites during ``loss``."""

    def __init__(self, sites: List, component: int, weight: float) -> None:
        super().__init__()
        self.sites = list(sites)  # plain references to the layers' attention sites
        self.component = component
        self.weight = weight

    def start(self) -> None:
        for site in self.sites:
            site.recorder = AttentionRecorder(stage='mixed', detach=False)

    def finish(self, inputs, data_samples) -> Dict[str, Tensor]:
        recorders = [site.recorder for site in self.sites]
        for site in self.sites:
            site.recorder = None
        if inputs is None:
            return {}
        missing = [i for i, r in enumerate(recorders) if not r.maps]
        if missing:
            raise RuntimeError(f'attention_cosine: attention layers {missing} were not called '
                               'during the host loss()')
        maps = [r.maps[0] for r in recorders]
        return {'loss_attention_cosine':
                attention_cosine_loss(maps, self.component, self.weight)}

    def extra_repr(self) -> str:
        return f'component={self.component}, weight={self.weight:g}'


@register_regularizer('attention_cosine')
def attach_attention_cosine(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Add DeepViT's cosine regularizer on the attention maps of layers ``0..component``.

    Options: ``component`` (number of consecutive layer pairs from the first, official
    ``cos_reg_component``; required), ``weight`` (official 0.1) and ``targets`` (a module-path
    pattern selecting the attention layers, default all, in depth order).
    """
    cfg = check_options('attention_cosine', cfg, ('component', 'weight', 'targets'))
    if 'component' not in cfg:
        raise KeyError('attention_cosine needs `component`, the number of consecutive layer '
                       'pairs (official cos_reg_component, e.g. 12)')
    component = check_positive_int(cfg['component'], 'attention_cosine component')
    weight = check_finite_weight(cfg.get('weight', OFFICIAL_WEIGHT), 'attention_cosine weight')
    layers = find_attention_modules(model, cfg.get('targets') or '', 'attention_cosine')
    if len(layers) < component + 1:
        raise ValueError(f'attention_cosine component={component} needs {component + 1} '
                         f'attention layers, {type(model).__name__} has {len(layers)}')
    layers = layers[:component + 1]
    sites = [install_attention_site(module) for _, module in layers]
    add_loss_term(model, CHILD, AttentionCosineTerm(sites, component, weight))
    return [(f'{layers[0][0]} .. {layers[-1][0]}', 'attention cosine',
             f'component={component}, weight={weight:g}')]
