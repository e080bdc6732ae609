"""The ``attention_dropout`` key of ``Regularized``: attention dropout with a depth schedule.

Dropout on the attention probabilities (after the softmax, survivors rescaled by ``1 / (1 - p)``),
the baseline of the DropKey paper (Li et al., "DropKey for Vision Transformer", CVPR 2023), with
the per-layer ratio of DropKey's depth schedule (:func:`~mmvitreg.ops.dropkey.dropkey_ratios`):
the paper reports that a ratio decreasing with depth helps Dropout too. Each attention layer under
``targets`` gets an ``nn.Dropout`` child named ``attention_dropout`` with its layer's ratio; the
stage folds it into the host's own attention dropout (independent dropouts ``p`` and ``q`` are
one dropout ``1 - (1 - p)(1 - q)``), so the fused attention kernels compute it. In eval the host
runs unchanged.

Config::

    model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                               attention_dropout=dict(ratio=0.1, schedule='decrease')))
"""
from typing import List, Optional

import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.dropkey import DROPKEY_SCHEDULES, dropkey_ratios
from ..attention import add_attention_stage, find_attention_modules, supported_attention_types
from ..registry import SummaryRow, check_options, register_regularizer
from ..stage import AttentionCall, AttentionStage, register_attention_stage

__all__ = ['AttentionDropoutStage', 'attach_attention_dropout']

CHILD = 'attention_dropout'


@register_attention_stage
class AttentionDropoutStage(AttentionStage):
    """``nn.Dropout`` on the attention probabilities, right after the host's own dropout."""

    child = CHILD
    phase = 'probs'
    stochastic = True

    def active(self, dropout: nn.Module) -> bool:
        return dropout.training and dropout.p > 0

    def apply(self, dropout: nn.Module, probs: Tensor, call: AttentionCall) -> Tensor:
        return dropout(probs)

    def dropout_p(self, dropout: nn.Module) -> Optional[float]:
        return dropout.p


def _ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f'attention_dropout {name} must be a number in [0, 1), got {value!r}')
    return float(value)


@register_regularizer('attention_dropout')
def attach_attention_dropout(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Give the attention layers under ``targets`` (a module-path pattern, default all) dropout
    on their attention probabilities: ``ratio`` (required) on the first layer, then DropKey's
    ``schedule`` ('decrease' (default): linear to ``min_ratio`` (0) at the last layer,
    'constant', 'increase') over the layers in depth order."""
    cfg = check_options('attention_dropout', cfg, ('ratio', 'schedule', 'min_ratio', 'targets'))
    if 'ratio' not in cfg:
        raise KeyError('attention_dropout needs `ratio`, the drop probability of the first '
                       'attention layer (e.g. 0.1)')
    schedule = cfg.get('schedule', 'decrease')
    if schedule not in DROPKEY_SCHEDULES:
        raise ValueError(f'attention_dropout schedule must be one of {list(DROPKEY_SCHEDULES)}, '
                         f'got {schedule!r}')
    ratio, min_ratio = _ratio(cfg['ratio'], 'ratio'), _ratio(cfg.get('min_ratio', 0.0), 'min_ratio')
    layers = find_attention_modules(model, cfg.get('targets') or '', 'attention dropout')
    if not layers:
        raise ValueError(f'attention_dropout found no supported attention module in '
                         f'{type(model).__name__}; supported: {supported_attention_types()}')
    rows = []
    for (name, module), p in zip(layers, dropkey_ratios(len(layers), ratio, schedule, min_ratio)):
        add_attention_stage(module, CHILD, nn.Dropout(p))
        rows.append((name, 'attention dropout', f'p={p:.4g}'))
    return rows
