"""The ``dropkey`` key of ``Regularized``: DropKey on every (or the targeted) attention layer.

Li et al., "DropKey for Vision Transformer", CVPR 2023. The maths (masks, schedules, kernels)
is :mod:`mmvitreg.ops.dropkey`; this file only decides where DropKey goes:

* each supported attention module under ``targets`` gets a parameter-free ``dropkey`` child
  (:class:`~mmvitreg.ops.dropkey.DropKey`); its stage (:class:`DropKeyStage`, phase ``'logits'``)
  masks the logits before the softmax while the module trains (eval outputs are the host's own),
  through DropKey's own kernel when no other mechanism acts on the layer;
* the ratio follows the paper's depth schedule within each target group (``'decrease'``: first
  layer ``ratio``, last layer ``min_ratio``);
* DropKey-Block/Cross need the keys on an image grid: the site reads it from the host (the
  extra tokens a ViT declares before a square patch grid, see :mod:`..grid`) or from the
  ``grid=dict(extra_tokens=N, size=(H, W))`` option; layers whose grid stays unknown (e.g. DETR
  layers, whose keys are object queries or a flattened map of unknown shape) are refused with
  one error naming the layer and what is missing;
* ``mc_samples > 1`` (classifiers) averages that many stochastic passes at test time.

Config::

    model = dict(type='Regularized', host='ImageClassifier', backbone=..., head=...,
                 dropkey=dict(ratio=0.1, schedule='decrease'))
    # per group: dropkey=dict(targets=[dict(name='encoder', ratio=0.1),
    #                                  dict(name='decoder.cross_attn', ratio=0.05)])
"""
from typing import List, Tuple

import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.dropkey import DropKey, assign_layer_ids, dropkey_ratios, next_layer_id
from ..attention import (add_attention_stage, find_attention_modules, install_attention_site,
                         supported_attention_types)
from ..grid import extra_tokens_of, grid_option, patch_grid_of
from ..model import MCPredictSite
from ..registry import SummaryRow, check_options, check_positive_int, register_regularizer
from ..stage import AttentionCall, AttentionStage, register_attention_stage

__all__ = ['DropKeyStage', 'attach_dropkey', 'extra_tokens_of', 'CHILD']

CHILD = 'dropkey'
_GROUP_KEYS = ('ratio', 'schedule', 'min_ratio', 'variant', 'block_size', 'chunk_size', 'backend',
               'grid')
_OPTIONS = _GROUP_KEYS + ('targets', 'mc_samples')
_DEFAULTS = dict(ratio=0.1, schedule='decrease', min_ratio=0.0, variant='random', block_size=3,
                 chunk_size=None, backend='auto', grid=None)


@register_attention_stage
class DropKeyStage(AttentionStage):
    """DropKey on the logits: dropped keys get ``-inf`` before the softmax (the paper's
    ``attn += bernoulli(p) * -1e12``, see :mod:`mmvitreg.ops.dropkey`). Alone on a layer, the
    ``DropKey`` module's own kernel computes the step without materialising the maps."""

    child = CHILD
    phase = 'logits'
    stochastic = True
    own_kernel = True

    def apply(self, dropkey: nn.Module, logits: Tensor, call: AttentionCall) -> Tensor:
        keep = dropkey.keep_mask(call.q, call.k, attn_mask=call.attn_mask, grid=call.grid)
        return logits.masked_fill(~keep, float('-inf'))

    def kernel(self, dropkey: nn.Module, call: AttentionCall) -> Tensor:
        return dropkey(call.q, call.k, call.v, attn_mask=call.attn_mask,
                       dropout_p=call.dropout_p, scale=call.scale, grid=call.grid)


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


def _check_repaired_rows(dropkey: DropKey, model: nn.Module, name: str, grid) -> None:
    """Warn at build about a high share of repaired (all-dropped) rows where the number of keys
    is known: the config's grid size, else the build-time patch grid of the enclosing backbone
    (other layers are checked at their first call)."""
    extra = extra_tokens_of(model, name) or 0
    if grid is not None and grid.extra_tokens is not None:
        extra = grid.extra_tokens
    size = grid.size if grid is not None and grid.size is not None else patch_grid_of(model, name)
    if size is None:
        return
    dropkey.check_repaired_rows(size[0] * size[1] + extra, size, extra)


@register_regularizer('dropkey')
def attach_dropkey(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Attach DropKey to the attention layers of ``model`` in place.

    Options: ``ratio`` (0.1), ``schedule`` ('decrease' | 'constant' | 'increase'),
    ``min_ratio`` (0.0), ``variant`` ('random' | 'block' | 'cross'), ``block_size`` (3),
    ``chunk_size`` and ``backend`` (see :class:`~mmvitreg.ops.dropkey.DropKey`), ``grid``
    (``dict(extra_tokens=N, size=(H, W))``: the key layout where the host does not tell it;
    ``extra_tokens`` defaults to what the model declares, ``size`` to a square grid),
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
    layer_id = next_layer_id(model)  # after those of subtrees regularized on their own
    for pattern, group in _groups(cfg):
        mods = [(n, m) for n, m in find_attention_modules(model, pattern, 'DropKey')
                if id(m) not in claimed]
        if not mods:
            raise ValueError(
                f'DropKey target {pattern!r} matched no supported attention module in '
                f'{type(model).__name__}; supported attention types: '
                f'{supported_attention_types()}')
        ratios = dropkey_ratios(len(mods), group['ratio'], group['schedule'], group['min_ratio'])
        grid = grid_option(group['grid'], 'DropKey')
        for (name, module), ratio in zip(mods, ratios):
            if CHILD in module._modules:
                raise ValueError(f'DropKey is already attached to {name!r}')
            site = install_attention_site(module, extra_tokens_of(model, name), grid)
            if group['variant'] != 'random' and not site.grid_known:
                raise ValueError(
                    f"DropKey variant {group['variant']!r} needs the keys on an image grid, but "
                    f'the keys of {name!r} ({type(module).__name__}) are not on a known grid: '
                    f'{site.grid_missing}; give it with grid=dict(extra_tokens=..., '
                    "size=(H, W)) or use variant='random' for it (a separate `targets` group)")
            dropkey = DropKey(ratio, group['variant'], group['block_size'],
                              chunk_size=group['chunk_size'], backend=group['backend'],
                              layer_id=layer_id, name=name)
            add_attention_stage(module, CHILD, dropkey)
            _check_repaired_rows(dropkey, model, name, grid)
            claimed.add(id(module))
            layer_id += 1
            settings = dropkey.extra_repr()
            if grid is not None:
                settings += f', grid=(extra_tokens={grid.extra_tokens}, size={grid.size})'
            rows.append((name, 'DropKey', settings))
    if mc_samples > 1:
        if not (hasattr(model, 'extract_feat') and hasattr(getattr(model, 'head', None),
                                                            '_get_predictions')):
            raise ValueError(
                f'DropKey mc_samples={mc_samples} needs an mmpretrain classifier host (e.g. '
                f"host='ImageClassifier'), got {type(model).__name__}")
        MCPredictSite.inverse_activation(model.head)  # refuses heads of unknown activation
        MCPredictSite.install(model, samples=mc_samples)
        rows.append(('', 'DropKey MC averaging', f'mc_samples={mc_samples}'))
    assign_layer_ids(model)
    return rows
