"""The ``drloc`` key of ``Regularized``: the dense relative localization loss on a host model.

Liu et al., "Efficient Training of Visual Transformers with Small Datasets", NeurIPS 2021
(official code ``yhlleo/VTs-Drloc``). The heads and losses are the registered ``DRLocHead`` type
(``mmvitreg.models.heads``, built through the registry); this file decides which features they
see and adds ``loss_drloc`` to the host's losses: a :class:`DRLocTerm` child ``drloc_head`` (one
head per feature source, an ``nn.ModuleList``) is a loss term of the model's loss site, and
:class:`~.model.FeatureTap` sites on the source modules (and on ``grid_source``, whose
``(tokens, (H, W))`` output gives the token grid) capture their outputs during ``loss`` only (no
second backbone pass, no pass at build time, no forward hooks). ``predict`` and
``forward(mode='tensor')`` are untouched; the heads are training-only
(``tools/model_converters/strip_drloc.py`` removes them for deployment).

Config::

    model = dict(type='Regularized', host='ImageClassifier', backbone=..., head=...,
                 drloc=dict(num_pairs=64, variant='l1', loss_weight=0.1, pool_size=7))

Keys of ``drloc`` besides the ``DRLocHead`` arguments (any head argument may also be a list with
one value per source, e.g. per-stage bin counts):

``type`` (str)
    the registered head type (default ``'DRLocHead'``).
``source`` (str | list[str] | None)
    dotted path of the module whose output is used (``'backbone'``, ``'neck'``,
    ``'backbone.ln1'``, ``'backbone.stages.0.downsample'``, ...). ``None`` (default):
    ViT-family backbones (they declare ``num_extra_tokens``) -> the final token sequence
    (``backbone.ln1`` when ``final_norm``, else the last layer), extra tokens dropped; any other
    backbone -> its last output map (``index=-1``), e.g. the last Swin stage or ResNet C5.
``index`` (int | list[int])
    element of a tuple/list output (default ``-1``; ignored for ``(tokens, (H, W))`` outputs).
``all_layers`` (bool)
    the paper's "all layers" variant: one head per ViT block or per output of a multi-output
    backbone (every index of ``backbone.out_indices``); the losses are summed, each with the same
    ``lambda`` (official ``use_multiscale``).
``in_channels`` (int | list[int] | None)
    channels of each source; ``None`` reads them from the model's structure (ViT
    ``embed_dims``, Swin ``num_features``, ResNet ``feat_dim``, neck ``out_channels``) and
    asks for them otherwise.
``grid_source`` (str | None)
    module returning ``(tokens, (H, W))`` whose grid reshapes token sequences (default
    ``'backbone.patch_embed'`` when it exists, so non-square inputs work; else the grid must be
    square). A source whose own output is ``(tokens, (H, W))`` carries its grid.

Deliberate differences from the official code (documented options): the default features are
what the mmpretrain/mmdet backbone outputs (ViT: after the final norm; the official ViT uses the
last block's output before it), ``pool_mode='overlap'`` generalises the official 3x3/stride-2
average pooling to any ``k`` and non-square maps, and padded detection batches draw positions
inside each image's unpadded area.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.token_grid import square_grid
from mmvitreg.registry import MODELS
from .grid import declared_extra_tokens
from .model import FeatureTap, LossTerm, add_loss_term
from .registry import SummaryRow, register_regularizer

__all__ = ['DRLocTerm', 'attach_drloc', 'tokens_to_map', 'TAP_KEYS']

TAP_KEYS = ('source', 'index', 'all_layers', 'in_channels', 'grid_source')
CHILD = 'drloc_head'


def _grid_of(output) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of an output of the form ``(tokens, (H, W))``, else None."""
    if isinstance(output, (tuple, list)) and len(output) >= 2 and \
            isinstance(output[1], (tuple, list, torch.Size)) and len(output[1]) == 2 and \
            all(isinstance(v, int) for v in output[1]):
        return int(output[1][0]), int(output[1][1])
    return None


def tokens_to_map(output, index: int, grid_hw: Optional[Tuple[int, int]], num_extra: int,
                  path: str) -> Tensor:
    """Turn a captured module output into a ``(B, C, H, W)`` map.

    Token sequences ``(B, N, C)`` drop their leading extra tokens and are laid out on the grid
    of the output itself (``(tokens, (H, W))``), else ``grid_hw``, else a square grid.
    """
    own_grid = _grid_of(output)
    if own_grid is not None:
        feat, grid_hw = output[0], own_grid
    elif isinstance(output, (tuple, list)):
        if not output:
            raise ValueError(f'DRLoc source {path!r} returned an empty tuple')
        feat = output[index]
    else:
        feat = output
    if not isinstance(feat, Tensor):
        raise ValueError(f'DRLoc source {path!r} returned {type(feat).__name__}, expected a tensor')
    if feat.dim() == 4:
        return feat
    if feat.dim() != 3:
        raise ValueError(f'DRLoc source {path!r} returned shape {tuple(feat.shape)}; expected a '
                         '(B, C, H, W) map or (B, N, C) tokens')
    if grid_hw is None:
        grid = square_grid(feat.shape[1], num_extra)
        if grid is None:
            raise ValueError(f'DRLoc source {path!r} returns {feat.shape[1]} tokens, not '
                             f'{num_extra} extra tokens plus a square grid; set drloc.grid_source '
                             'to a module returning (tokens, (H, W))')
        grid_hw = grid.hw
    height, width = grid_hw
    extra = feat.shape[1] - height * width
    if extra < 0:
        raise ValueError(f'DRLoc source {path!r} has {feat.shape[1]} tokens, fewer than the '
                         f'{height}x{width} patch grid')
    tokens = feat[:, extra:]  # extra (class / distillation) tokens come first
    return tokens.transpose(1, 2).reshape(feat.shape[0], feat.shape[2], height, width)


def _valid_ratio(data_samples, device) -> Optional[Tensor]:
    """``(B, 2)`` unpadded fraction of each image (mmdet ``img_shape`` / ``batch_input_shape``)."""
    if not isinstance(data_samples, (list, tuple)) or not data_samples:
        return None
    ratios = []
    for sample in data_samples:
        meta = getattr(sample, 'metainfo', None) or {}
        img, batch = meta.get('img_shape'), meta.get('batch_input_shape')
        if img is None or batch is None:
            return None
        ratios.append((img[0] / batch[0], img[1] / batch[1]))
    return torch.tensor(ratios, dtype=torch.float32, device=device).clamp_(0, 1)


class DRLocTerm(nn.ModuleList, LossTerm):
    """The ``drloc_head`` child: one DRLoc head per source, summed into ``loss_drloc``.

    Head ``i`` reads source ``paths[i]`` (tuple element ``indices[i]``); ``taps`` maps each source
    path and ``grid_source`` (whose ``(tokens, (H, W))`` output gives the token grid) to the
    :class:`~.model.FeatureTap` site capturing it.
    """

    def __init__(self, heads: Sequence[nn.Module], paths: Sequence[str], indices: Sequence[int],
                 num_extra_tokens: int, grid_source: Optional[str] = None) -> None:
        super().__init__(heads)
        self.paths = list(paths)
        self.indices = list(indices)
        self.num_extra_tokens = num_extra_tokens
        self.grid_source = grid_source
        self.taps: Dict[str, FeatureTap] = {}

    def install_taps(self, model: nn.Module) -> None:
        """Route the sources (and ``grid_source``) of ``model`` through capturing sites."""
        grid = [self.grid_source] if self.grid_source is not None else []
        for path in dict.fromkeys(self.paths + grid):
            self.taps[path] = FeatureTap.install(model.get_submodule(path))

    def start(self) -> None:
        for tap in self.taps.values():
            tap.start()

    def finish(self, inputs, data_samples) -> Dict[str, Tensor]:
        captured = {path: tap.take() for path, tap in self.taps.items()}
        grid_hw = _grid_of(captured[self.grid_source]) if self.grid_source is not None else None
        if inputs is None:  # the host's loss failed: just stop capturing
            return {}
        outputs = {path: captured[path] for path in dict.fromkeys(self.paths)}
        missing = [path for path, out in outputs.items() if out is None]
        if missing:
            raise RuntimeError(f'DRLoc sources {missing} were not called during the host '
                               'loss(); check drloc.source')
        total = None
        for path, index, head in zip(self.paths, self.indices, self):
            feats = tokens_to_map(outputs[path], index, grid_hw, self.num_extra_tokens, path)
            value = head.loss(feats, _valid_ratio(data_samples, feats.device))[head.loss_name]
            total = value if total is None else total + value
        return {'loss_drloc': total}


def _is_token_backbone(backbone: Optional[nn.Module]) -> bool:
    return hasattr(backbone, 'num_extra_tokens') and hasattr(backbone, 'layers')


def _default_sources(model: nn.Module, source, index, all_layers: bool) -> List[Tuple[str, int]]:
    backbone = getattr(model, 'backbone', None)
    if source is None and _is_token_backbone(backbone):
        if all_layers:
            return [(f'backbone.layers.{i}', -1) for i in range(len(backbone.layers))]
        if getattr(backbone, 'final_norm', False) and hasattr(backbone, 'ln1'):
            return [('backbone.ln1', -1)]
        return [(f'backbone.layers.{len(backbone.layers) - 1}', -1)]
    if source is None:
        if backbone is None:
            raise ValueError(f'DRLoc cannot pick a feature source for {type(model).__name__} '
                             '(it has no backbone); set drloc.source')
        if all_layers and len(getattr(backbone, 'out_indices', ())) > 1:
            return [('backbone', i) for i in range(len(backbone.out_indices))]
        source = 'backbone'
    sources = [source] if isinstance(source, str) else list(source)
    indices = list(index) if isinstance(index, (list, tuple)) else [index]
    if len(indices) == 1:
        indices = indices * len(sources)
    if len(indices) != len(sources):
        raise ValueError(f'DRLoc index must be one int or one per source, got {index!r} for '
                         f'{len(sources)} sources')
    for path in sources:
        try:
            model.get_submodule(path)
        except AttributeError:
            raise ValueError(f'DRLoc source {path!r} is not a submodule of '
                             f'{type(model).__name__}') from None
    return list(zip(sources, indices))


def _infer_channels(model: nn.Module, path: str, index: int) -> Optional[int]:
    """Channels of a source's output from the model's structure, or None if not declared."""
    module = model.get_submodule(path)
    backbone = getattr(model, 'backbone', None)
    if path.startswith('backbone.') and _is_token_backbone(backbone):
        return int(backbone.embed_dims)
    if isinstance(getattr(module, 'out_channels', None), int):  # necks (FPN), patch merging
        return module.out_channels
    if isinstance(getattr(module, 'num_features', None), (list, tuple)):  # Swin
        stages = list(getattr(module, 'out_indices', range(len(module.num_features))))
        return int(module.num_features[stages[index]])
    if isinstance(getattr(module, 'feat_dim', None), int) and index == -1:  # ResNet C5
        return module.feat_dim
    if isinstance(getattr(module, 'embed_dims', None), int):
        return module.embed_dims
    return None


def _per_source(cfg: dict, count: int) -> List[dict]:
    """Head kwargs per source: list values are one per source."""
    out = [dict() for _ in range(count)]
    for key, value in cfg.items():
        if isinstance(value, list):
            if len(value) != count:
                raise ValueError(f'DRLoc {key} must be one value or one per source ({count}), '
                                 f'got {value!r}')
            for kwargs, v in zip(out, value):
                kwargs[key] = v
        else:
            for kwargs in out:
                kwargs[key] = value
    return out


@register_regularizer('drloc')
def attach_drloc(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Attach DRLoc heads to ``model`` and add ``loss_drloc`` to its ``loss`` (in place)."""
    if not isinstance(cfg, dict):
        raise TypeError(f'drloc options must be a dict (or True for the defaults), got {cfg!r}')
    if not callable(getattr(model, 'loss', None)):
        raise ValueError(f'DRLoc adds a loss and needs a model with loss(inputs, data_samples) '
                         f"(e.g. host='ImageClassifier' or a detector), got {type(model).__name__}")
    cfg = dict(cfg)
    head_type = cfg.pop('type', 'DRLocHead')
    source, index = cfg.pop('source', None), cfg.pop('index', -1)
    all_layers = bool(cfg.pop('all_layers', False))
    in_channels = cfg.pop('in_channels', None)
    default_grid = 'backbone.patch_embed'
    grid_source = cfg.pop('grid_source', default_grid)
    if grid_source is not None:
        try:
            model.get_submodule(grid_source)
        except AttributeError:
            if grid_source != default_grid:
                raise ValueError(f'DRLoc grid_source {grid_source!r} is not a submodule of '
                                 f'{type(model).__name__}') from None
            grid_source = None
    taps = _default_sources(model, source, index, all_layers)
    if in_channels is None:
        in_channels = [_infer_channels(model, path, idx) for path, idx in taps]
        unknown = [path for (path, _), c in zip(taps, in_channels) if c is None]
        if unknown:
            raise ValueError(f'DRLoc cannot tell the channels of source(s) {unknown} of '
                             f'{type(model).__name__}; set drloc.in_channels')
    elif isinstance(in_channels, int):
        in_channels = [in_channels] * len(taps)
    if len(in_channels) != len(taps):
        raise ValueError(f'DRLoc in_channels must be one int or one per source ({len(taps)}), '
                         f'got {in_channels!r}')
    heads = [MODELS.build(dict(type=head_type, in_channels=c, **kwargs))
             for c, kwargs in zip(in_channels, _per_source(cfg, len(taps)))]
    backbone = getattr(model, 'backbone', None)
    extra = declared_extra_tokens(backbone) if backbone is not None else None
    term = DRLocTerm(heads, [p for p, _ in taps], [i for _, i in taps], extra or 0, grid_source)
    add_loss_term(model, CHILD, term)
    term.install_taps(model)
    return [(path if idx == -1 else f'{path}[{idx}]', 'DRLoc',
             f'in_channels={head.in_channels}, variant={head.variant}, '
             f'lambda={head.loss_weight:g}') for (path, idx), head in zip(taps, heads)]
