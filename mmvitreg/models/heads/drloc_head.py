"""DRLoc head and the ``drloc`` regularizer (auxiliary dense relative localization loss).

Liu et al., "Efficient Training of Visual Transformers with Small Datasets", NeurIPS 2021;
official code ``yhlleo/VTs-Drloc``. The tensor maths lives in :mod:`mmvitreg.models.losses.drloc`.

* :class:`DRLocHead` takes a ``(B, C, H, W)`` map (any ``H x W`` >= 2x2, square or not) and returns
  ``dict(loss_drloc=lambda * L_drloc)``.
* The ``drloc`` regularizer (config key of ``Regularized``) attaches ``model.drloc_head`` (an
  ``nn.ModuleList``, one head per feature source; several for the "all layers" variant) to a model
  with a ``loss(inputs, data_samples)`` method (mmpretrain ``ImageClassifier``, mmdet detectors,
  the QPIC HOI detector) and overrides that ``loss``: while the host computes its usual losses,
  forward hooks capture the selected features (no second backbone pass) and ``loss_drloc`` is
  added to the loss dict. ``predict``/``forward(mode='tensor')`` are untouched, and the heads are
  training-only (see ``tools/model_converters/strip_drloc.py`` for deploy checkpoints).

Config::

    model = dict(type='Regularized', host='ImageClassifier', backbone=..., head=...,
                 drloc=dict(num_pairs=64, variant='l1', loss_weight=0.1, pool_size=7))

Keys of ``drloc`` besides the :class:`DRLocHead` arguments:

``source`` (str | list[str] | None)
    dotted path, inside the model, of the module whose output is used (``'backbone'``,
    ``'neck'``, ``'backbone.ln1'``, ``'backbone.layers.11'``, ...). ``None`` (default) picks it:
    mmpretrain ViT-family backbones (they have ``num_extra_tokens``) -> the final token sequence
    (``backbone.ln1`` when ``final_norm``, else the last layer), class/distillation tokens
    dropped and the tokens reshaped to the patch grid reported by ``backbone.patch_embed`` (so
    non-square inputs work); any other backbone -> its last output map (``index=-1``), e.g. the
    last Swin stage or ResNet C5.
``index`` (int | list[int])
    element of a tuple/list output (default ``-1``).
``all_layers`` (bool)
    the paper's "all layers" variant: one head per ViT block (each block's tokens) or per output of
    a multi-output backbone (e.g. every Swin stage with ``out_indices=(0, 1, 2, 3)``); the losses
    are summed, each with the same ``lambda`` (official ``use_multiscale``).
``in_channels`` (int | list[int] | None)
    channels of each source; ``None`` infers them with one ``no_grad`` eval-mode pass of
    ``extract_feat`` on a ``probe_size`` image at build time.
``grid_source`` (str | None)
    module returning ``(tokens, (H, W))`` used to reshape token sequences (default
    ``'backbone.patch_embed'``).

Deliberate differences from the official code (all documented options): the features are what
the mmpretrain/mmdet backbone outputs (Swin: after the stage norm; ViT: after the final norm;
the official Swin/ViT use the last block's output before the norm), signed L1 targets are not
shifted by ``k - 1``, ``pool_mode='overlap'`` generalises the official 3x3/stride-2 average
pooling to any ``k`` and
non-square maps, and padded detection batches draw positions inside each image's unpadded area.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModule
from torch import Tensor

from mmvitreg.models.losses.drloc import (check_variant, drloc_lambda, drloc_loss,
                                          gather_pair_features, pool_grid, relative_targets,
                                          sample_pair_positions, valid_grid_sizes, POOL_MODES)
from mmvitreg.models.regularized import extend_class, register_regularizer
from mmvitreg.registry import MODELS

__all__ = ['DRLocHead', 'DRLocMixin', 'apply_drloc']

IntPair = Union[int, Sequence[int]]


def _pair_or_none(value: Optional[IntPair], name: str) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 2:
        raise ValueError(f'DRLoc {name} must be an int >= 2 or a (height, width) pair of ints '
                         f'>= 2, got {value!r}')
    return pair


@MODELS.register_module()
class DRLocHead(BaseModule):
    """Dense relative localization head: MLP on pairs of embeddings -> their 2-D offset.

    Args:
        in_channels: channels ``C`` of the input map.
        num_pairs: pairs ``m`` sampled per image (uniform, with replacement). Paper/official: 64.
        variant: ``'l1'`` (absolute offsets; default, as the official ``train.sh``),
            ``'l1_signed'`` (signed offsets, paper), ``'ce'`` (per-axis classification) or
            ``'gaussian'``/``'cbr'`` (Gaussian prior
            regression); see :mod:`mmvitreg.models.losses.drloc`.
        loss_weight: ``lambda`` (>= 0). Paper: 0.1 for T2T/CvT, 0.5 for Swin (official default 0.5).
        weight_schedule: ``None`` (constant ``lambda``) or
            ``dict(type='warmup_decay', warmup=20, by_epoch=True)``: the official schedule (linear
            warm-up from 0 over ``warmup`` epochs, then linear decay to 0 at the last epoch),
            evaluated from mmengine's ``MessageHub`` runtime info (``epoch``/``max_epochs``, or
            ``iter``/``max_iters`` with ``by_epoch=False``, ``warmup`` then in iterations).
            Without runtime info (outside a runner) the full ``loss_weight`` is used.
        pool_size: ``k``: pool the map to (at most) ``k x k`` before sampling (int or
            ``(h, w)``); ``None`` keeps the native grid. Official: T2T-ViT 14x14 -> 7x7,
            ViT/Swin native.
        pool_mode: ``'overlap'`` (official 3x3/stride-2 average pooling, generalised) or
            ``'adaptive'`` (exactly ``k`` cells); see :func:`pool_grid`.
        normalize: divide L1 targets by the grid size per axis (paper); official: ``False``.
        grid_size: largest grid (int or ``(h, w)``) the ``'ce'``/``'gaussian'`` classifiers cover
            (``2 * g - 1`` bins per axis); defaults to ``pool_size``; one of them is required for
            those variants.
        hidden_dims: hidden widths of the MLP. Official: ``(512, 512)`` with ReLU (the
            classification variants add one more ``512 -> 512`` linear layer before the two
            per-axis output layers, as the official code does). The paper describes it only as
            a small MLP.
        var_weight: log-variance penalty of ``'gaussian'`` (official 0.001).
        loss_name: key of the returned loss.
        init_cfg: defaults to truncated-normal (std 0.02) linear layers, as the official
            Swin/T2T models initialise the DRLoc MLP.
    """

    def __init__(self,
                 in_channels: int,
                 num_pairs: int = 64,
                 variant: str = 'l1',
                 loss_weight: float = 0.5,
                 weight_schedule: Optional[dict] = None,
                 pool_size: Optional[IntPair] = None,
                 pool_mode: str = 'overlap',
                 normalize: bool = False,
                 grid_size: Optional[IntPair] = None,
                 hidden_dims: Sequence[int] = (512, 512),
                 var_weight: float = 1e-3,
                 loss_name: str = 'loss_drloc',
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='TruncNormal', layer='Linear', std=0.02, bias=0.)):
        super().__init__(init_cfg=init_cfg)
        if int(num_pairs) != num_pairs or num_pairs < 1:
            raise ValueError(f'DRLoc num_pairs must be an integer >= 1, got {num_pairs}')
        if loss_weight < 0:
            raise ValueError(f'DRLoc loss_weight (lambda) must be >= 0, got {loss_weight}')
        if in_channels < 1:
            raise ValueError(f'DRLoc in_channels must be >= 1, got {in_channels}')
        if pool_mode not in POOL_MODES:
            raise ValueError(f'DRLoc pool_mode must be one of {list(POOL_MODES)}, '
                             f'got {pool_mode!r}')
        if not hidden_dims:
            raise ValueError('DRLoc hidden_dims must name at least one hidden layer width')
        self.in_channels = in_channels
        self.num_pairs = int(num_pairs)
        self.variant = check_variant(variant)
        self.loss_weight = float(loss_weight)
        self.weight_schedule = self._check_schedule(weight_schedule)
        self.pool_size = _pair_or_none(pool_size, 'pool_size')
        self.pool_mode = pool_mode
        self.normalize = normalize
        self.var_weight = var_weight
        self.loss_name = loss_name

        layers: List[nn.Module] = []
        width = 2 * in_channels
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        if self.variant in ('l1', 'l1_signed'):
            self.grid_size = None
            layers.append(nn.Linear(width, 2))
            self.mlp = nn.Sequential(*layers)
            self.row_fc = self.col_fc = None
        else:
            grid = _pair_or_none(grid_size, 'grid_size') or self.pool_size
            if grid is None:
                raise ValueError(f"DRLoc variant {self.variant!r} needs grid_size or pool_size to "
                                 'fix the number of offset classes')
            self.grid_size = grid
            layers.append(nn.Linear(width, width))  # official: third linear, no activation
            self.mlp = nn.Sequential(*layers)
            self.row_fc = nn.Linear(width, 2 * grid[0] - 1)
            self.col_fc = nn.Linear(width, 2 * grid[1] - 1)

    @staticmethod
    def _check_schedule(schedule: Optional[dict]) -> Optional[dict]:
        if schedule is None:
            return None
        schedule = dict(schedule)
        kind = schedule.pop('type', 'warmup_decay')
        if kind == 'constant':
            return None
        if kind != 'warmup_decay':
            raise ValueError("DRLoc weight_schedule type must be 'constant' or 'warmup_decay', "
                             f'got {kind!r}')
        out = dict(warmup=float(schedule.pop('warmup', 20)),
                   by_epoch=bool(schedule.pop('by_epoch', True)))
        if schedule:
            raise ValueError(f'DRLoc weight_schedule got unknown keys {sorted(schedule)}; '
                             "allowed: 'type', 'warmup', 'by_epoch'")
        if out['warmup'] < 0:
            raise ValueError(f"DRLoc weight_schedule warmup must be >= 0, got {out['warmup']}")
        return out

    def current_weight(self) -> float:
        """``lambda`` now: constant, or the official warm-up/decay from the runner's progress."""
        if self.weight_schedule is None:
            return self.loss_weight
        hub = MessageHub.get_current_instance()
        keys = ('epoch', 'max_epochs') if self.weight_schedule['by_epoch'] else ('iter',
                                                                                 'max_iters')
        progress, total = (hub.get_info(k) for k in keys)
        if progress is None or total is None:
            return self.loss_weight
        return drloc_lambda(self.loss_weight, float(progress), float(total),
                            self.weight_schedule['warmup'], 'warmup_decay')

    def forward(self,
                feats: Tensor,
                valid_ratio: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tuple[object, Tensor]:
        """Sample pairs on ``feats`` ``(B, C, H, W)`` and predict their offsets.

        ``valid_ratio`` (``(B, 2)``, unpadded fraction of each image's rows/cols) restricts the
        sampling to the unpadded area. Returns ``(pred, target)`` in the layout of
        :func:`drloc_loss` (``B * num_pairs`` rows).
        """
        if feats.dim() != 4:
            raise ValueError(f'DRLocHead expects a (B, C, H, W) map, got shape '
                             f'{tuple(feats.shape)}')
        if feats.shape[1] != self.in_channels:
            raise ValueError(f'DRLocHead was built for in_channels={self.in_channels}, got a map '
                             f'with {feats.shape[1]} channels')
        if min(feats.shape[-2:]) < 2:
            raise ValueError(f'DRLoc needs a grid of at least 2x2 positions, got '
                             f'{feats.shape[-2]}x{feats.shape[-1]}')
        feats = pool_grid(feats, self.pool_size, self.pool_mode)
        batch, _, height, width = feats.shape
        valid_hw = None if valid_ratio is None else valid_grid_sizes(valid_ratio, (height, width))
        pos_a, pos_b = sample_pair_positions(batch, height, width, self.num_pairs,
                                             generator=generator, device=feats.device,
                                             valid_hw=valid_hw)
        pairs = torch.cat([gather_pair_features(feats, pos_a),
                           gather_pair_features(feats, pos_b)], dim=-1).flatten(0, 1)
        hidden = self.mlp(pairs)
        if self.variant == 'l1':
            target = relative_targets(pos_a, pos_b, (height, width), 'abs', self.normalize)
            return hidden, target.flatten(0, 1)
        if self.variant == 'l1_signed':
            target = relative_targets(pos_a, pos_b, (height, width), 'signed', self.normalize)
            return hidden, target.flatten(0, 1)
        max_offset = (self.grid_size[0] - 1, self.grid_size[1] - 1)
        target = relative_targets(pos_a, pos_b, (height, width), 'class', max_offset=max_offset)
        return (self.row_fc(hidden), self.col_fc(hidden)), target.flatten(0, 1)

    def loss(self,
             feats: Tensor,
             valid_ratio: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """``dict(loss_drloc=lambda * L)`` for one map (see :meth:`forward`)."""
        pred, target = self(feats, valid_ratio, generator)
        value = drloc_loss(pred, target, self.variant, self.var_weight)
        return {self.loss_name: value * self.current_weight()}


# --------------------------------------------------------------------------------------------
# The ``drloc`` regularizer: attach heads + capture features during the host's loss().
# --------------------------------------------------------------------------------------------

_TAP_KEYS = ('source', 'index', 'all_layers', 'in_channels', 'grid_source', 'probe_size')


def _is_token_backbone(backbone: nn.Module) -> bool:
    return hasattr(backbone, 'num_extra_tokens') and hasattr(backbone, 'layers')


def _select(output, index: int):
    if isinstance(output, (tuple, list)):
        if not output:
            raise ValueError('DRLoc source returned an empty tuple')
        return output[index]
    return output


def _to_map(output, index: int, grid_hw: Optional[Tuple[int, int]], path: str) -> Tensor:
    """Turn a captured module output into a ``(B, C, H, W)`` map."""
    feat = _select(output, index)
    if not isinstance(feat, Tensor):
        raise ValueError(f'DRLoc source {path!r} returned {type(feat).__name__}, expected a tensor')
    if feat.dim() == 4:
        return feat
    if feat.dim() == 3:
        if grid_hw is None:
            raise ValueError(f'DRLoc source {path!r} returns tokens (B, N, C) but no patch grid '
                             'size was captured; set drloc.grid_source')
        height, width = int(grid_hw[0]), int(grid_hw[1])
        extra = feat.shape[1] - height * width
        if extra < 0:
            raise ValueError(f'DRLoc source {path!r} has {feat.shape[1]} tokens, fewer than the '
                             f'{height}x{width} patch grid')
        tokens = feat[:, extra:]  # drop class / distillation tokens (they come first)
        return tokens.transpose(1, 2).reshape(feat.shape[0], feat.shape[2], height, width)
    raise ValueError(f'DRLoc source {path!r} returned shape {tuple(feat.shape)}; expected a '
                     '(B, C, H, W) map or (B, N, C) tokens')


class _Capture:
    """Forward hooks storing the first output of each tapped module during one call."""

    def __init__(self, model: nn.Module, paths: Sequence[str], grid_source: Optional[str]):
        self.outputs: Dict[str, object] = {}
        self.grid_hw: Optional[Tuple[int, int]] = None
        self.handles = []
        for path in dict.fromkeys(paths):
            self.handles.append(
                model.get_submodule(path).register_forward_hook(self._store(path)))
        if grid_source is not None:
            self.handles.append(
                model.get_submodule(grid_source).register_forward_hook(self._store_grid))

    def _store(self, path: str):

        def hook(module, args, output):
            self.outputs.setdefault(path, output)

        return hook

    def _store_grid(self, module, args, output):
        if self.grid_hw is None and isinstance(output, (tuple, list)) and len(output) == 2:
            self.grid_hw = tuple(output[1])

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


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


class DRLocMixin:
    """Adds ``loss_drloc`` to the host's ``loss(inputs, data_samples)`` (see module docstring)."""

    def loss(self, inputs, data_samples, *args, **kwargs):
        taps = self._drloc_taps
        with _Capture(self, [path for path, _ in taps], self._drloc_grid_source) as capture:
            losses = super().loss(inputs, data_samples, *args, **kwargs)
        missing = [path for path, _ in taps if path not in capture.outputs]
        if missing:
            raise RuntimeError(f'DRLoc sources {missing} were not called during '
                               f'{type(self).__name__}.loss(); check drloc.source')
        total = None
        for (path, index), head in zip(taps, self.drloc_head):
            feats = _to_map(capture.outputs[path], index, capture.grid_hw, path)
            value = head.loss(feats, _valid_ratio(data_samples, feats.device))[head.loss_name]
            total = value if total is None else total + value
        losses['loss_drloc'] = total
        return losses


def _default_taps(model: nn.Module, cfg: dict) -> List[Tuple[str, int]]:
    backbone = getattr(model, 'backbone', None)
    source, index, all_layers = cfg['source'], cfg['index'], cfg['all_layers']
    if source is None and backbone is not None and _is_token_backbone(backbone):
        if all_layers:
            return [(f'backbone.layers.{i}', -1) for i in range(len(backbone.layers))]
        if getattr(backbone, 'final_norm', False) and hasattr(backbone, 'ln1'):
            return [('backbone.ln1', -1)]
        return [(f'backbone.layers.{len(backbone.layers) - 1}', -1)]
    if source is None:
        if backbone is None:
            raise ValueError(f'DRLoc cannot pick a feature source for {type(model).__name__} '
                             '(it has no backbone); set drloc.source')
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


def _probe(model: nn.Module, taps: List[Tuple[str, int]], grid_source: Optional[str],
           probe_size: Optional[int]) -> _Capture:
    """Run one eval-mode, no-grad ``extract_feat`` pass on a dummy image, capturing the taps."""
    if probe_size is None:
        backbone = getattr(model, 'backbone', None)
        size = getattr(getattr(backbone, 'patch_embed', None), 'init_input_size', None)
        probe_size = int(max(size)) if size is not None else 224
    param = next(model.parameters(), None)
    device = param.device if param is not None else 'cpu'
    dummy = torch.zeros(1, 3, probe_size, probe_size, device=device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Capture(model, [p for p, _ in taps], grid_source) as capture:
            if hasattr(model, 'extract_feat'):
                model.extract_feat(dummy)
            else:
                model.backbone(dummy)
    finally:
        model.train(training)
    return capture


@register_regularizer('drloc', order=80)
def apply_drloc(model: nn.Module, cfg: dict) -> None:
    """Attach DRLoc heads to ``model`` and make its ``loss`` add ``loss_drloc`` (in place)."""
    if not callable(getattr(model, 'loss', None)):
        raise ValueError(f'DRLoc must be applied to a model with loss(inputs, data_samples) '
                         f"(e.g. host='ImageClassifier' or a detector), got "
                         f'{type(model).__name__}')
    cfg = dict(cfg)
    tap_cfg = dict(source=cfg.pop('source', None), index=cfg.pop('index', -1),
                   all_layers=bool(cfg.pop('all_layers', False)),
                   in_channels=cfg.pop('in_channels', None), probe_size=cfg.pop('probe_size', None))
    default_grid = 'backbone.patch_embed'
    grid_source = cfg.pop('grid_source', default_grid)
    try:
        model.get_submodule(grid_source) if grid_source else None
    except AttributeError:
        if grid_source != default_grid:
            raise ValueError(f'DRLoc grid_source {grid_source!r} is not a submodule of '
                             f'{type(model).__name__}') from None
        grid_source = None
    taps = _default_taps(model, tap_cfg)
    in_channels = tap_cfg['in_channels']
    if tap_cfg['all_layers'] and tap_cfg['source'] is None and len(taps) == 1:
        # multi-output backbone (e.g. Swin with several out_indices): one head per output.
        capture = _probe(model, taps, grid_source, tap_cfg['probe_size'])
        output = capture.outputs[taps[0][0]]
        if isinstance(output, (tuple, list)) and len(output) > 1:
            taps = [(taps[0][0], i) for i in range(len(output))]
    if in_channels is None:
        capture = _probe(model, taps, grid_source, tap_cfg['probe_size'])
        in_channels = []
        for path, index in taps:
            feat = _to_map(capture.outputs[path], index, capture.grid_hw, path)
            in_channels.append(int(feat.shape[1]))
    elif isinstance(in_channels, int):
        in_channels = [in_channels] * len(taps)
    if len(in_channels) != len(taps):
        raise ValueError(f'DRLoc in_channels must be one int or one per source ({len(taps)}), '
                         f'got {tap_cfg["in_channels"]!r}')
    cfg.pop('type', None)
    heads = [DRLocHead(in_channels=c, **cfg) for c in in_channels]
    param = next(model.parameters(), None)
    model.drloc_head = nn.ModuleList(heads).to(param.device if param is not None else 'cpu')
    model._drloc_taps = taps
    model._drloc_grid_source = grid_source
    extend_class(model, DRLocMixin)
