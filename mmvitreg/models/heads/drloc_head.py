"""DRLoc head: the MLP and losses of the dense relative localization task.

Liu et al., "Efficient Training of Visual Transformers with Small Datasets", NeurIPS 2021;
official code ``yhlleo/VTs-Drloc``. The tensor maths lives in :mod:`mmvitreg.models.losses.drloc`;
how the head is attached to a host model (the ``drloc`` key of ``Regularized``) lives in
:mod:`mmvitreg.regularizers.drloc`.

:class:`DRLocHead` takes a ``(B, C, H, W)`` map (any ``H x W`` >= 2x2, square or not) and returns
``dict(loss_drloc=lambda * L_drloc)``.
"""
import math
import numbers
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModule
from torch import Tensor

from mmvitreg.models.losses.drloc import (POOL_MODES, check_variant, drloc_lambda, drloc_loss,
                                          gather_pair_features, pool_grid, relative_targets,
                                          sample_pair_positions, valid_grid_sizes)
from mmvitreg.registry import MODELS

__all__ = ['DRLocHead']

IntPair = Union[int, Sequence[int]]
#: more pairs per image than this is a typo, not a setting (the paper samples 64; each pair holds
#: two feature vectors of every image in the batch, so 10**6 pairs exhaust any device's memory)
MAX_NUM_PAIRS = 4096


def _pair_or_none(value: Optional[IntPair], name: str) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 2:
        raise ValueError(f'DRLoc {name} must be an int >= 2 or a (height, width) pair of ints '
                         f'>= 2, got {value!r}')
    return pair


_SCHEDULE_KEYS = ('type', 'warmup', 'total', 'by_epoch', 'iters_per_epoch')


@MODELS.register_module()
class DRLocHead(BaseModule):
    """Dense relative localization head: MLP on pairs of embeddings -> their 2-D offset.

    Args:
        in_channels: channels ``C`` of the input map.
        num_pairs: pairs ``m`` sampled per image (uniform, with replacement). Paper/official: 64.
        variant: ``'l1'`` (regression; default, as the official ``train.sh``), ``'l1_signed'``
            (``'l1'`` with ``use_abs=False``: signed offsets, the paper's formulation), ``'ce'``
            (per-axis classification over offset bins) or ``'gaussian'``/``'cbr'`` (Gaussian
            prior regression over the bins); see :mod:`mmvitreg.models.losses.drloc`.
        use_abs: official ``--use_abs``: predict ``|a - b|`` instead of ``a - b``. ``None``
            (default) = ``True`` (the official ``train.sh`` always passes it), except for
            ``variant='l1_signed'``.
        loss_weight: ``lambda`` (>= 0). Paper: 0.1 for T2T/CvT, 0.5 for Swin (official default 0.5).
        weight_schedule: ``None`` (constant ``lambda``) or ``dict(type='warmup_decay',
            warmup=20, total=300, by_epoch=True, iters_per_epoch=None)``: the official schedule
            (``_weight_decay``): linear warm-up from 0 over ``warmup``, then linear decay that
            would reach 0 at ``total`` (default: the end of training). The official run trains
            epochs 0..100 with ``total=300``. Progress is read from mmengine's ``MessageHub``
            runtime info. ``by_epoch=True``: ``warmup``/``total`` in epochs, evaluated once per
            epoch (official); a loop that reports a single epoch (``IterBasedTrainLoop``) needs
            ``iters_per_epoch`` (the train dataloader length) to count epochs, else a
            ``ValueError`` is raised instead of silently keeping lambda at its epoch-0 value.
            ``by_epoch=False``: ``warmup``/``total`` in iterations. Without runtime info (outside
            a runner) the full ``loss_weight`` is used.
        pool_size: ``k``: pool the map to (at most) ``k x k`` before sampling (int or
            ``(h, w)``); ``None`` keeps the native grid. Official: T2T/CvT 14x14 -> 7x7,
            ViT/Swin/ResNet native.
        pool_mode: ``'overlap'`` (official 3x3/stride-2 average pooling, generalised) or
            ``'adaptive'`` (exactly ``k`` cells); see :func:`pool_grid`.
        normalize: divide L1 targets by the grid size per axis (paper); official: ``False``.
        out_dim: official bin layout of ``'ce'``/``'gaussian'`` (int or ``(h, w)``): ``out_dim``
            bins per axis with ``use_abs`` (targets ``|a - b|``), else ``2 * out_dim - 1`` bins
            with targets ``a - b + (k - 1)`` for the current ``k x k`` grid. Official values:
            14 for T2T/CvT/ResNet/ViT, the last-stage grid (7) for Swin, ``56/28/14/7`` per
            stage for Swin's all-layers variant.
        grid_size: the project's centred bin layout (int or ``(h, w)``, exclusive with
            ``out_dim``): ``g`` bins with ``use_abs``, else ``2 * g - 1`` bins with the zero
            offset at bin ``g - 1`` whatever the grid. Defaults to ``pool_size`` when neither is
            given; one of the three is required for the bin variants.
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
                 use_abs: Optional[bool] = None,
                 loss_weight: float = 0.5,
                 weight_schedule: Optional[dict] = None,
                 pool_size: Optional[IntPair] = None,
                 pool_mode: str = 'overlap',
                 normalize: bool = False,
                 out_dim: Optional[IntPair] = None,
                 grid_size: Optional[IntPair] = None,
                 hidden_dims: Sequence[int] = (512, 512),
                 var_weight: float = 1e-3,
                 loss_name: str = 'loss_drloc',
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='TruncNormal', layer='Linear', std=0.02, bias=0.)):
        super().__init__(init_cfg=init_cfg)
        if (isinstance(num_pairs, bool) or not isinstance(num_pairs, numbers.Integral)
                or not 1 <= num_pairs <= MAX_NUM_PAIRS):
            raise ValueError(f'DRLoc num_pairs must be an integer in [1, {MAX_NUM_PAIRS}] (pairs '
                             f'per image; paper 64), got {num_pairs!r}')
        if (isinstance(loss_weight, bool) or not isinstance(loss_weight, numbers.Real)
                or not math.isfinite(loss_weight) or loss_weight < 0):
            raise ValueError(f'DRLoc loss_weight (lambda) must be a finite number >= 0, '
                             f'got {loss_weight!r}')
        if in_channels < 1:
            raise ValueError(f'DRLoc in_channels must be >= 1, got {in_channels}')
        if pool_mode not in POOL_MODES:
            raise ValueError(f'DRLoc pool_mode must be one of {list(POOL_MODES)}, '
                             f'got {pool_mode!r}')
        if not hidden_dims:
            raise ValueError('DRLoc hidden_dims must name at least one hidden layer width')
        self.in_channels = in_channels
        self.num_pairs = int(num_pairs)
        self.variant, self.use_abs = self._check_variant(variant, use_abs)
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
        self.out_dim = self.grid_size = self.num_bins = None
        if self.variant in ('l1', 'l1_signed'):
            if out_dim is not None or grid_size is not None:
                raise ValueError(f'DRLoc out_dim/grid_size set the bins of the ce/gaussian '
                                 f'variants; variant {self.variant!r} regresses 2 numbers')
            layers.append(nn.Linear(width, 2))
            self.mlp = nn.Sequential(*layers)
            self.row_fc = self.col_fc = None
            return
        if out_dim is not None and grid_size is not None:
            raise ValueError(f'DRLoc takes out_dim (official bin layout) or grid_size (centred '
                             f'bins), not both; got out_dim={out_dim!r}, grid_size={grid_size!r}')
        if out_dim is not None:
            self.out_dim = _pair_or_none(out_dim, 'out_dim')
            size = self.out_dim
        else:
            self.grid_size = _pair_or_none(grid_size, 'grid_size') or self.pool_size
            if self.grid_size is None:
                raise ValueError(f"DRLoc variant {self.variant!r} needs out_dim, grid_size or "
                                 'pool_size to fix the number of offset classes')
            size = self.grid_size
        self.num_bins = size if self.use_abs else (2 * size[0] - 1, 2 * size[1] - 1)
        layers.append(nn.Linear(width, width))  # official: third linear, no activation
        self.mlp = nn.Sequential(*layers)
        self.row_fc = nn.Linear(width, self.num_bins[0])
        self.col_fc = nn.Linear(width, self.num_bins[1])

    @staticmethod
    def _check_variant(variant: str, use_abs: Optional[bool]) -> Tuple[str, bool]:
        name = check_variant(variant)
        if use_abs is not None and not isinstance(use_abs, bool):
            raise ValueError(f'DRLoc use_abs must be True, False or None, got {use_abs!r}')
        if name == 'l1_signed':
            if use_abs:
                raise ValueError("DRLoc variant 'l1_signed' regresses signed offsets; it cannot "
                                 'take use_abs=True (use variant=\'l1\')')
            return name, False
        use_abs = True if use_abs is None else use_abs
        if name == 'l1' and not use_abs:
            name = 'l1_signed'
        return name, use_abs

    @staticmethod
    def _check_schedule(schedule: Optional[dict]) -> Optional[dict]:
        if schedule is None:
            return None
        schedule = dict(schedule)
        unknown = sorted(set(schedule) - set(_SCHEDULE_KEYS))
        if unknown:
            raise ValueError(f'DRLoc weight_schedule got unknown keys {unknown}; allowed: '
                             f'{list(_SCHEDULE_KEYS)}')
        kind = schedule.get('type', 'warmup_decay')
        if kind == 'constant':
            return None
        if kind != 'warmup_decay':
            raise ValueError("DRLoc weight_schedule type must be 'constant' or 'warmup_decay', "
                             f'got {kind!r}')
        out = dict(warmup=float(schedule.get('warmup', 20)),
                   total=schedule.get('total'),
                   by_epoch=bool(schedule.get('by_epoch', True)),
                   iters_per_epoch=schedule.get('iters_per_epoch'))
        if out['warmup'] < 0:
            raise ValueError(f"DRLoc weight_schedule warmup must be >= 0, got {out['warmup']}")
        if out['total'] is not None:
            out['total'] = float(out['total'])
            if out['total'] <= out['warmup']:
                raise ValueError(f"DRLoc weight_schedule total must be > warmup "
                                 f"({out['warmup']:g}), got {out['total']:g}")
        ipe = out['iters_per_epoch']
        if ipe is not None and (int(ipe) != ipe or ipe < 1):
            raise ValueError(f'DRLoc weight_schedule iters_per_epoch must be an integer >= 1, '
                             f'got {ipe!r}')
        if ipe is not None and not out['by_epoch']:
            raise ValueError('DRLoc weight_schedule iters_per_epoch converts epochs to '
                             'iterations; it needs by_epoch=True')
        return out

    def _progress(self) -> Optional[Tuple[float, float]]:
        """``(progress, total)`` of the schedule from the runner's ``MessageHub``, or None."""
        sched = self.weight_schedule
        hub = MessageHub.get_current_instance()
        if not sched['by_epoch']:
            step, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
            if step is None or max_iters is None:
                return None
            return float(step), sched['total'] or float(max_iters)
        ipe = sched['iters_per_epoch']
        if ipe is not None:  # epochs counted from iterations (any loop)
            step, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
            if step is None or max_iters is None:
                return None
            return float(int(step) // int(ipe)), sched['total'] or float(max_iters) / ipe
        epoch, max_epochs = hub.get_info('epoch'), hub.get_info('max_epochs')
        if epoch is None or max_epochs is None:
            return None
        self.check_train_loop(int(max_epochs))
        return float(epoch), sched['total'] or float(max_epochs)

    def check_train_loop(self, max_epochs: int) -> None:
        """Refuse an epoch-counted schedule on a loop that reports a single epoch (e.g.
        ``IterBasedTrainLoop``: lambda would stay at its epoch-0 value). ``TrainLoopCheckHook``
        calls it before training starts; :meth:`current_weight` calls it too."""
        sched = self.weight_schedule
        if sched is None or not sched['by_epoch'] or sched['iters_per_epoch'] is not None:
            return
        if int(max_epochs) <= 1:
            raise ValueError(
                'DRLoc weight_schedule counts epochs (by_epoch=True) but the training loop '
                f'reports a single epoch (max_epochs={max_epochs}, e.g. IterBasedTrainLoop), so '
                'lambda would stay at its epoch-0 value; set weight_schedule.iters_per_epoch to '
                'the train dataloader length, or by_epoch=False with warmup/total in iterations')

    def current_weight(self) -> float:
        """``lambda`` now: constant, or the official warm-up/decay from the runner's progress."""
        if self.weight_schedule is None:
            return self.loss_weight
        progress = self._progress()
        if progress is None:
            return self.loss_weight
        return drloc_lambda(self.loss_weight, progress[0], progress[1],
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
        grid = (height, width)
        if self.variant == 'l1':
            target = relative_targets(pos_a, pos_b, grid, 'abs', self.normalize)
            return hidden, target.flatten(0, 1)
        if self.variant == 'l1_signed':
            target = relative_targets(pos_a, pos_b, grid, 'signed', self.normalize)
            return hidden, target.flatten(0, 1)
        if self.use_abs:
            target = relative_targets(pos_a, pos_b, grid, 'abs_class', num_classes=self.num_bins)
        elif self.out_dim is not None:  # official: shift by the current grid's k - 1
            target = relative_targets(pos_a, pos_b, grid, 'class', num_classes=self.num_bins)
        else:  # centred bins: zero offset at bin g - 1 whatever the grid
            max_offset = (self.grid_size[0] - 1, self.grid_size[1] - 1)
            target = relative_targets(pos_a, pos_b, grid, 'class', max_offset=max_offset)
        return (self.row_fc(hidden), self.col_fc(hidden)), target.flatten(0, 1)

    def loss(self,
             feats: Tensor,
             valid_ratio: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """``dict(loss_drloc=lambda * L)`` for one map (see :meth:`forward`)."""
        pred, target = self(feats, valid_ratio, generator)
        value = drloc_loss(pred, target, self.variant, self.var_weight)
        return {self.loss_name: value * self.current_weight()}
