"""The ``dropkey`` key of ``Regularized``: DropKey on every (or the targeted) attention layer.

Li et al., "DropKey for Vision Transformer", CVPR 2023. The maths (masks, schedules, kernels)
is :mod:`mmvitreg.ops.dropkey`; this file only decides where DropKey goes:

* each supported attention module under ``targets`` gets a parameter-free ``dropkey`` child
  (:class:`~mmvitreg.ops.dropkey.DropKey`) and its attention site, which masks the logits before
  the softmax while the module trains (eval outputs are the host's own);
* the ratio follows the paper's depth schedule within each target group (``'decrease'``: first
  layer ``ratio``, last layer ``min_ratio``);
* DropKey-Block/Cross need the keys on an image grid: layers whose site cannot tell the grid
  (e.g. DETR layers, whose keys are object queries or a flattened map of unknown shape) are
  refused with one error naming the layer;
* ``mc_samples > 1`` (classifiers) averages that many stochastic passes at test time.

Config::

    model = dict(type='Regularized', host='ImageClassifier', backbone=..., head=...,
                 dropkey=dict(ratio=0.1, schedule='decrease'))
    # per group: dropkey=dict(targets=[dict(name='encoder', ratio=0.1),
    #                                  dict(name='decoder.cross_attn', ratio=0.05)])
"""
from typing import List, Optional, Tuple

import torch.nn as nn

from mmvitreg.ops.dropkey import DropKey, dropkey_ratios
from .attention import (DROPKEY_CHILD, find_attention_modules, install_attention_site,
                        supported_attention_types)
from .model import MCPredictSite
from .registry import SummaryRow, check_options, check_positive_int, register_regularizer

__all__ = ['attach_dropkey', 'extra_tokens_of']

_GROUP_KEYS = ('ratio', 'schedule', 'min_ratio', 'variant', 'block_size', 'chunk_size', 'backend')
_OPTIONS = _GROUP_KEYS + ('targets', 'mc_samples')
_DEFAULTS = dict(ratio=0.1, schedule='decrease', min_ratio=0.0, variant='random', block_size=3,
                 chunk_size=None, backend='auto')


def extra_tokens_of(model: nn.Module, path: str) -> Optional[int]:
    """Leading non-grid tokens seen by the attention at ``path``: the ``num_extra_tokens``
    (mmpretrain ViTs) or ``num_prefix_tokens`` (timm ViTs) of its nearest enclosing module that
    declares one; None when no enclosing module does."""
    parts = path.split('.')
    for i in range(len(parts) - 1, -1, -1):
        owner = model.get_submodule('.'.join(parts[:i]))
        for attr in ('num_extra_tokens', 'num_prefix_tokens'):
            value = getattr(owner, attr, None)
            if isinstance(value, int):
                return value
    return None


def _groups(cfg: dict) -> List[Tuple[str, dict]]:
    defaults = dict(_DEFAULTS)
    defaults.update({k: v for k, v in cfg.items() if k in _GROUP_KEYS})
    targets = cfg.get('targets') or ['']
    if isinstance(targets, (str, dict)):
        targets = [targets]
    groups = []
    for target in targets:
        group = dict(defaults)
        if isinstance(target, dict):
            check_options('dropkey target', target, ('name', ) + _GROUP_KEYS)
            group.update(target)
            pattern = group.pop('name', '') or ''
        elif isinstance(target, str):
            pattern = target
        else:
            raise ValueError(f'DropKey targets must be strings or dicts, got {target!r}')
        groups.append((pattern, group))
    return groups


@register_regularizer('dropkey')
def attach_dropkey(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Attach DropKey to the attention layers of ``model`` in place.

    Options: ``ratio`` (0.1), ``schedule`` ('decrease' | 'constant' | 'increase'),
    ``min_ratio`` (0.0), ``variant`` ('random' | 'block' | 'cross'), ``block_size`` (3),
    ``chunk_size`` and ``backend`` (see :class:`~mmvitreg.ops.dropkey.DropKey`),
    ``mc_samples`` (1; > 1 needs an mmpretrain classifier) and ``targets``: module-path patterns
    (see :func:`~mmvitreg.regularizers.attention.match_target`) or dicts
    ``dict(name=pattern, ratio=..., ...)`` overriding options per group. The schedule runs over
    the matched layers of each group in depth order; a layer claimed by an earlier group is
    skipped by later ones.
    """
    cfg = check_options('dropkey', cfg, _OPTIONS)
    mc_samples = check_positive_int(cfg.get('mc_samples', 1), 'DropKey mc_samples')
    rows: List[SummaryRow] = []
    claimed = set()
    layer_id = 0
    for pattern, group in _groups(cfg):
        mods = [(n, m) for n, m in find_attention_modules(model, pattern, 'DropKey')
                if id(m) not in claimed]
        if not mods:
            raise ValueError(
                f'DropKey target {pattern!r} matched no supported attention module in '
                f'{type(model).__name__}; supported attention types: '
                f'{supported_attention_types()}')
        ratios = dropkey_ratios(len(mods), group['ratio'], group['schedule'], group['min_ratio'])
        for (name, module), ratio in zip(mods, ratios):
            if DROPKEY_CHILD in module._modules:
                raise ValueError(f'DropKey is already attached to {name!r}')
            site = install_attention_site(module, extra_tokens_of(model, name))
            if group['variant'] != 'random' and not site.grid_known:
                raise ValueError(
                    f"DropKey variant {group['variant']!r} needs the keys on an image grid, but "
                    f'the keys of {name!r} ({type(module).__name__}) are not a known grid (e.g. '
                    "object queries); use variant='random' for it (a separate `targets` group)")
            dropkey = DropKey(ratio, group['variant'], group['block_size'],
                              chunk_size=group['chunk_size'], backend=group['backend'],
                              layer_id=layer_id, name=name)
            module.add_module(DROPKEY_CHILD, dropkey)
            claimed.add(id(module))
            layer_id += 1
            rows.append((name, 'DropKey', dropkey.extra_repr()))
    if mc_samples > 1:
        if not (hasattr(model, 'extract_feat') and hasattr(getattr(model, 'head', None),
                                                            '_get_predictions')):
            raise ValueError(
                f'DropKey mc_samples={mc_samples} needs an mmpretrain classifier host (e.g. '
                f"host='ImageClassifier'), got {type(model).__name__}")
        MCPredictSite.inverse_activation(model.head)  # refuses heads of unknown activation
        MCPredictSite.install(model, samples=mc_samples)
        rows.append(('', 'DropKey MC averaging', f'mc_samples={mc_samples}'))
    return rows
