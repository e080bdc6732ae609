"""Dense relative localization (DRLoc): functional core.

Liu et al., "Efficient Training of Visual Transformers with Small Datasets", NeurIPS 2021
(official code: ``yhlleo/VTs-Drloc``). From the final grid of embeddings of an image, ``m``
pairs of positions are drawn uniformly with replacement, the two embeddings of each pair are
concatenated and a small MLP predicts their 2-D offset; the loss is added to the task loss with a
weight ``lambda``.

Everything here is a pure tensor function (no module state). Conventions:

* positions and offsets are ``(row, col)``: index ``0`` is the vertical axis (grid height ``H``),
  index ``1`` the horizontal axis (grid width ``W``). Grids need not be square: every axis uses
  its own size (the official code assumes ``H == W`` everywhere).
* the offset of a pair ``(a, b)`` is ``a - b``, as in the official code (``pxs - pys``).

Loss variants (:data:`DRLOC_VARIANTS`; official ``--drloc_mode`` and ``--use_abs``):

``'l1'``
    L1 regression of the absolute offsets ``|a - b|``: official ``drloc_mode='l1'`` with
    ``--use_abs``, which the official ``train.sh`` always passes. Default here.
``'l1_signed'``
    L1 regression of the signed offsets ``a - b``: the paper's formulation (``t = (a - b) / k``
    with ``normalize=True``) and the official code without ``--use_abs``. The official code adds
    ``k - 1`` to the signed target; that constant is absorbed by the output bias, so it is left
    out here and the target is the plain signed offset.
``'ce'``
    classification: one softmax head per axis over offset bins, cross-entropy summed over the two
    axes (official ``drloc_mode='ce'``). Targets (:func:`relative_targets`): with ``--use_abs``
    (mode ``'abs_class'``) the bin of ``|a - b|`` among ``out_dim`` bins; without it (mode
    ``'class'``) the bin ``a - b + (k - 1)`` among ``2 * out_dim - 1`` bins. The official models
    fix ``out_dim`` per architecture, not per grid: T2T/CvT/ResNet/ViT use ``out_dim=14`` (a 7x7
    T2T grid then has 27 signed bins and targets ``a - b + 6``: bins 13..26 are never a target),
    Swin uses the last stage's grid (7), its all-layers variant ``56/28/14/7`` on grids
    ``28/14/7/7``.
``'gaussian'`` (alias ``'cbr'``)
    Gaussian-prior ("cycle-back") regression over the same bins and targets: the softmax gives a
    mean ``mu = sum_c p_c c`` and a variance ``s2 = sum_c p_c (c - mu)^2 + 1e-8`` per axis; the
    loss is ``(mu - t)^2 / s2 + lambda_var * log s2`` (``lambda_var = 0.001``), averaged over
    pairs and summed over axes (official ``drloc_mode='cbr'``).

The "all layers" variant of the paper (one DRLoc MLP per stage/block, losses summed) is a
composition of these functions and lives in :mod:`mmvitreg.models.heads.drloc_head`.

Offset normalisation: the paper divides offsets by the grid size ``k``; the official code trains on
unnormalised offsets (``USE_NORMAL`` is off and never reaches the loss). Default here:
unnormalised (official); ``normalize=True`` divides each axis by its own grid size (paper).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'DRLOC_VARIANTS', 'POOL_MODES', 'check_variant', 'sample_pair_positions', 'relative_targets',
    'gather_pair_features', 'pool_grid', 'valid_grid_sizes', 'drloc_loss', 'l1_offset_loss',
    'ce_offset_loss', 'gaussian_offset_loss', 'drloc_lambda'
]

DRLOC_VARIANTS = ('l1', 'l1_signed', 'ce', 'gaussian')
_ALIASES = {'cbr': 'gaussian', 'l1_abs': 'l1'}
POOL_MODES = ('overlap', 'adaptive')
EPS = 1e-8  # official EPSILON added to the predicted variance

IntPair = Union[int, Sequence[int]]


def check_variant(variant: str) -> str:
    """Return the canonical name of a DRLoc loss variant or raise a one-sentence ``ValueError``."""
    name = _ALIASES.get(variant, variant)
    if name not in DRLOC_VARIANTS:
        raise ValueError(f'DRLoc variant must be one of {list(DRLOC_VARIANTS)} (or '
                         f"'cbr' = 'gaussian'), got {variant!r}")
    return name


def _check_grid(height: int, width: int) -> None:
    if height < 2 or width < 2:
        raise ValueError(f'DRLoc needs a grid of at least 2x2 positions, got {height}x{width}')


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f'{name} must be an int or a (height, width) pair, got {value!r}')
    return int(value[0]), int(value[1])


def sample_pair_positions(batch_size: int,
                          height: int,
                          width: int,
                          num_pairs: int,
                          generator: Optional[torch.Generator] = None,
                          device: Union[str, torch.device, None] = None,
                          valid_hw: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Draw ``num_pairs`` position pairs per image, uniformly and with replacement.

    Paper/official code: both positions of every pair are drawn independently and uniformly
    over the ``k x k`` grid (``torch.randint``), ``m`` pairs per image (official default 64).

    Args:
        batch_size: number of images ``B``.
        height, width: grid size ``H x W`` (non-square allowed; at least 2x2).
        num_pairs: pairs per image ``m`` (>= 1).
        generator: optional ``torch.Generator`` for reproducible draws (must live on ``device``).
        device: device of the returned tensors.
        valid_hw: optional ``(B, 2)`` integer tensor of valid rows/cols per image (e.g. the
            unpadded part of a detection batch); positions are drawn inside
            ``[0, valid_h) x [0, valid_w)``. Values are clamped to ``[1, H]``/``[1, W]``.
            (Extension: the official code has no padding.)

    Returns:
        ``(pos_a, pos_b)``, two ``(B, m, 2)`` long tensors of ``(row, col)`` positions.
    """
    if num_pairs < 1:
        raise ValueError(f'DRLoc num_pairs must be >= 1, got {num_pairs}')
    if batch_size < 1:
        raise ValueError(f'DRLoc batch_size must be >= 1, got {batch_size}')
    _check_grid(height, width)
    shape = (2, batch_size, num_pairs)
    if valid_hw is None:
        rows = torch.randint(height, shape, generator=generator, device=device)
        cols = torch.randint(width, shape, generator=generator, device=device)
    else:
        valid_hw = torch.as_tensor(valid_hw, device=device)
        if valid_hw.shape != (batch_size, 2):
            raise ValueError(f'DRLoc valid_hw must have shape ({batch_size}, 2), '
                             f'got {tuple(valid_hw.shape)}')
        limit_h = valid_hw[:, 0].clamp(1, height).to(torch.float32).view(1, -1, 1)
        limit_w = valid_hw[:, 1].clamp(1, width).to(torch.float32).view(1, -1, 1)
        u = torch.rand((2, ) + shape, generator=generator, device=device)
        rows = (u[0] * limit_h).long().clamp_(max=height - 1)
        cols = (u[1] * limit_w).long().clamp_(max=width - 1)
    pos = torch.stack([rows, cols], dim=-1)  # (2, B, m, 2)
    return pos[0], pos[1]


def relative_targets(pos_a: Tensor,
                     pos_b: Tensor,
                     grid_hw: Tuple[int, int],
                     mode: str = 'abs',
                     normalize: bool = False,
                     max_offset: Optional[IntPair] = None,
                     num_classes: Optional[IntPair] = None) -> Tensor:
    """Targets of the pretext task for position pairs on an ``H x W`` grid.

    Args:
        pos_a, pos_b: ``(..., 2)`` long ``(row, col)`` positions.
        grid_hw: ``(H, W)`` of the grid the positions live on.
        mode: ``'abs'`` -> ``|a - b|`` (float); ``'signed'`` -> ``a - b`` (float);
            ``'class'`` -> bin index ``a - b + shift`` (long; official target without
            ``--use_abs``: ``delta + (k - 1)``); ``'abs_class'`` -> bin index ``|a - b|`` (long;
            official target with ``--use_abs``).
        normalize: divide float targets by ``(H, W)`` per axis (paper: ``t = delta / k``;
            official default: off). Ignored for the class modes.
        max_offset: the ``'class'`` shift per axis (int or ``(h, w)``), i.e. the largest
            representable negative offset; default ``(H - 1, W - 1)``, the official shift.
            Fixing it (e.g. from the head's ``grid_size``) keeps the zero-offset bin in place
            when the grid size varies between batches.
        num_classes: bins per axis of the classifier (int or ``(h, w)``) for the class modes;
            targets that would fall outside ``[0, num_classes)`` raise a ``ValueError``.
            Default for ``'class'``: ``2 * shift + 1``; required for ``'abs_class'``.

    Returns:
        ``(..., 2)`` tensor of targets.
    """
    height, width = grid_hw
    delta = pos_a - pos_b
    if mode in ('class', 'abs_class'):
        if mode == 'class':
            shift_h, shift_w = (_pair(max_offset, 'max_offset') if max_offset is not None else
                                (height - 1, width - 1))
            low = (shift_h - (height - 1), shift_w - (width - 1))  # smallest target per axis
            high = (shift_h + height - 1, shift_w + width - 1)  # largest target per axis
            bins = (_pair(num_classes, 'num_classes') if num_classes is not None else
                    (2 * shift_h + 1, 2 * shift_w + 1))
        else:
            if num_classes is None:
                raise ValueError("DRLoc target mode 'abs_class' needs num_classes (bins per axis)")
            shift_h = shift_w = 0
            low, high = (0, 0), (height - 1, width - 1)
            bins = _pair(num_classes, 'num_classes')
        if min(low) < 0 or high[0] >= bins[0] or high[1] >= bins[1]:
            raise ValueError(f'DRLoc grid {height}x{width} has offsets beyond the classifier '
                             f'range ({bins[0]}x{bins[1]} bins, {mode!r} targets '
                             f'{low[0]}..{high[0]} x {low[1]}..{high[1]}); raise out_dim/'
                             'grid_size or set pool_size')
        if mode == 'abs_class':
            return delta.abs().long()
        shift = torch.tensor([shift_h, shift_w], device=delta.device, dtype=delta.dtype)
        return (delta + shift).long()
    if mode == 'abs':
        target = delta.abs().float()
    elif mode == 'signed':
        target = delta.float()
    else:
        raise ValueError("DRLoc target mode must be 'abs', 'signed', 'class' or 'abs_class', "
                         f'got {mode!r}')
    if normalize:
        target = target / torch.tensor([float(height), float(width)], device=target.device)
    return target


def gather_pair_features(feats: Tensor, pos: Tensor) -> Tensor:
    """Embeddings at ``(row, col)`` positions: ``(B, C, H, W)`` x ``(B, m, 2)`` -> ``(B, m, C)``."""
    batch, channels, height, width = feats.shape
    flat = feats.flatten(2)  # (B, C, HW)
    index = (pos[..., 0] * width + pos[..., 1]).unsqueeze(1).expand(-1, channels, -1)
    return flat.gather(2, index).transpose(1, 2)


def pool_grid(feats: Tensor, size: Optional[IntPair], mode: str = 'overlap') -> Tensor:
    """Reduce a ``(B, C, H, W)`` map to (about) ``size`` before sampling pairs.

    ``mode='overlap'`` generalises the official pooling (T2T-ViT: ``AvgPool2d(3, stride=2,
    padding=1, count_include_pad=False)``, 14x14 -> 7x7): per axis the stride is
    ``s = ceil(L / k)``, the kernel ``2s - 1`` and the padding ``s - 1``, giving ``ceil(L / s)
    <= k`` cells (exactly ``k`` whenever ``L`` is a multiple of ``k``, e.g. 14 -> 7). Axes already
    ``<= k`` are left alone. ``mode='adaptive'`` uses ``adaptive_avg_pool2d`` to exactly
    ``min(L, k)`` cells. ``size=None`` returns the map unchanged (native grid).
    """
    if size is None:
        return feats
    if mode not in POOL_MODES:
        raise ValueError(f'DRLoc pool_mode must be one of {list(POOL_MODES)}, got {mode!r}')
    k_h, k_w = _pair(size, 'pool_size')
    height, width = feats.shape[-2:]
    if height <= k_h and width <= k_w:
        return feats
    if mode == 'adaptive':
        return F.adaptive_avg_pool2d(feats, (min(height, k_h), min(width, k_w)))
    s_h, s_w = max(1, math.ceil(height / k_h)), max(1, math.ceil(width / k_w))
    return F.avg_pool2d(feats, kernel_size=(2 * s_h - 1, 2 * s_w - 1), stride=(s_h, s_w),
                        padding=(s_h - 1, s_w - 1), count_include_pad=False)


def valid_grid_sizes(valid_ratio: Tensor, grid_hw: Tuple[int, int]) -> Tensor:
    """Valid rows/cols per image of an ``H x W`` grid from ``(B, 2)`` unpadded-size ratios."""
    size = torch.tensor(grid_hw, dtype=torch.float32, device=valid_ratio.device)
    cells = torch.ceil(valid_ratio.float() * size - 1e-4).long()
    return torch.minimum(cells.clamp(min=1), size.long())


def l1_offset_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over pairs and both axes (official ``F.l1_loss``)."""
    return F.l1_loss(pred, target)


def ce_offset_loss(pred: Sequence[Tensor], target: Tensor) -> Tensor:
    """Cross-entropy of the row and column bin logits, averaged over pairs, summed over axes."""
    return F.cross_entropy(pred[0], target[:, 0]) + F.cross_entropy(pred[1], target[:, 1])


def _gaussian_axis(logits: Tensor, target: Tensor, var_weight: float) -> Tensor:
    prob = logits.softmax(dim=-1)
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=prob.dtype)
    mean = (prob * bins).sum(-1)
    var = (prob * (bins - mean.unsqueeze(-1))**2).sum(-1) + EPS
    log_var = var.log()
    return (torch.exp(-log_var) * (mean - target.to(prob.dtype))**2 + var_weight * log_var).mean()


def gaussian_offset_loss(pred: Sequence[Tensor], target: Tensor,
                         var_weight: float = 1e-3) -> Tensor:
    """Variance-aware ("cycle-back") regression over the offset bins, summed over the axes."""
    return (_gaussian_axis(pred[0], target[:, 0], var_weight) +
            _gaussian_axis(pred[1], target[:, 1], var_weight))


def drloc_loss(pred: Union[Tensor, Sequence[Tensor]],
               target: Tensor,
               variant: str = 'l1',
               var_weight: float = 1e-3) -> Tensor:
    """Un-weighted DRLoc loss of one grid.

    Args:
        pred: ``'l1'``/``'l1_signed'``: ``(N, 2)`` offsets; ``'ce'``/``'gaussian'``: a pair
            ``(row_logits (N, 2*G_h - 1), col_logits (N, 2*G_w - 1))`` (one tensor per axis so
            non-square grids may have different bin counts; the official code stacks them).
        target: ``(N, 2)`` from :func:`relative_targets` (``'abs'``/``'signed'`` float targets for
            the L1 variants, ``'class'`` long targets for the others).
        variant: one of :data:`DRLOC_VARIANTS` (or ``'cbr'``).
        var_weight: weight of the log-variance penalty of ``'gaussian'`` (official 0.001).
    """
    variant = check_variant(variant)
    if variant in ('l1', 'l1_signed'):
        return l1_offset_loss(pred, target)
    if variant == 'ce':
        return ce_offset_loss(pred, target)
    return gaussian_offset_loss(pred, target, var_weight)


def drloc_lambda(base: float,
                 progress: float,
                 total: float,
                 warmup: float = 20,
                 schedule: Optional[str] = 'warmup_decay') -> float:
    """Weight ``lambda`` of the DRLoc loss at training progress ``progress`` (epochs or iters).

    ``schedule=None``/``'constant'``: ``base``. ``'warmup_decay'`` is the official schedule
    (``_weight_decay`` in ``main.py``, evaluated once per epoch): linear warm-up from 0 at
    ``progress = 0`` to ``base`` at ``progress = warmup``, then linear decay that would reach 0 at
    ``progress = total``. ``total`` is the *schedule's* length, which need not be the training
    length: the official loop trains epochs 0..100 of a schedule with ``total = 300``
    (``--total_epochs``), so lambda ends at ``0.714 * base`` (mean ``0.78 * base``). The paper
    only states a constant ``lambda``.
    """
    if base < 0:
        raise ValueError(f'DRLoc loss_weight (lambda) must be >= 0, got {base}')
    if schedule in (None, 'constant'):
        return float(base)
    if schedule != 'warmup_decay':
        raise ValueError("DRLoc weight schedule must be None, 'constant' or 'warmup_decay', "
                         f'got {schedule!r}')
    if progress <= warmup:
        return float(base) if warmup <= 0 else min(base / warmup * progress, base)
    if total <= warmup:
        return 0.0
    return max(0.0, base * (1.0 - (progress - warmup) / (total - warmup)))
