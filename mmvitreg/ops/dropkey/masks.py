"""DropKey keep masks (True = key kept) from the counter-based generator, and row repair.

* ``random`` (the paper's DropKey): every (sample, head, query, key) logit is dropped
  independently with probability ``p`` (quantised to ``round(p * 65536) / 65536``).
* ``block`` / ``cross``: seeds are drawn on the key grid padded by ``block_size - 1`` so every key
  is covered by exactly :func:`block_footprint` seed positions, each firing with the calibrated
  :func:`seed_probability`; the expected dropped fraction is ``p`` at every key, borders
  included. Extra (class, distillation) tokens are not on the grid and are dropped i.i.d. with
  probability ``p``.
* **All-dropped rows** (every allowed key of a query dropped, probability ``p ** Nk``): that row
  is left unmasked by DropKey, i.e. plain attention with the host's own mask. The paper's fp32
  code would average uniformly over all keys there, its fp16 run gives NaN.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import compiled
from .random import cpu_block_rows, for_each_block, lane_terms, lanes_below, next_key
from .schedule import (block_footprint, check_block_size, check_ratio, check_variant,
                       ratio_threshold, seed_probability)
from .tracing import not_traced

__all__ = ['sample_keep_mask', 'keep_mask_rows', 'keep_for_rows', 'additive_mask_region',
           'region_rows', 'query_rows', 'repair_all_dropped', 'check_grid', 'MaskSpec',
           'full_region', 'repaired_row_share']


def check_grid(variant: str, num_keys: int, grid_hw: Optional[Tuple[int, int]],
               num_extra_tokens: int, where: str = '') -> None:
    """Raise a one-line ``ValueError`` unless the keys are ``num_extra_tokens`` + an H x W grid."""
    if variant == 'random':
        return
    where = f' in {where}' if where else ''
    if grid_hw is None:
        raise ValueError(
            f'DropKey variant {variant!r}{where} needs keys on an image grid, but the layout of '
            f'its {num_keys} keys is unknown (not the declared extra tokens + a square grid, or '
            f'no image grid at all, e.g. object queries): give it (Regularized: dropkey '
            f"grid=dict(extra_tokens=..., size=(H, W))) or use variant='random' for it")
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if num_extra_tokens < 0 or gh < 1 or gw < 1 or gh * gw + num_extra_tokens != num_keys:
        raise ValueError(
            f'DropKey variant {variant!r}{where}: grid {gh}x{gw} with {num_extra_tokens} extra '
            f'tokens does not match the {num_keys} keys of the attention')


def query_rows(lead: int, num_queries: int, q0: int, q1: int,
               device: Union[str, torch.device]) -> torch.Tensor:
    """Linear row indices ``l * Nq + q`` of queries ``[q0, q1)`` of every leading index ``l``."""
    base = torch.arange(lead, dtype=torch.int64, device=device)[:, None] * num_queries
    return (base + torch.arange(q0, q1, dtype=torch.int64, device=device)).reshape(-1)


def keep_mask_rows(key: int,
                   shape: Sequence[int],
                   q0: int,
                   q1: int,
                   ratio: float,
                   variant: str = 'random',
                   grid_hw: Optional[Tuple[int, int]] = None,
                   num_extra_tokens: int = 0,
                   block_size: int = 3,
                   device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Keep mask of queries ``[q0, q1)`` of the full mask of ``shape = (..., Nq, Nk)``.

    Returns ``(*shape[:-2], q1 - q0, Nk)`` bool: rows of the full mask, bit-identical whatever
    the chunking. No repair of all-dropped rows (see :func:`repair_all_dropped`).
    """
    device = torch.device('cpu') if device is None else torch.device(device)
    shape = tuple(int(s) for s in shape)
    lead_shape, nq, nk = shape[:-2], shape[-2], shape[-1]
    rows = query_rows(math.prod(lead_shape), nq, q0, q1, device)
    keep = keep_for_rows(key, rows, nk, ratio, variant, grid_hw, num_extra_tokens, block_size)
    return keep.view(lead_shape + (q1 - q0, nk))


def keep_for_rows(key: int,
                  rows: torch.Tensor,
                  nk: int,
                  ratio: float,
                  variant: str = 'random',
                  grid_hw: Optional[Tuple[int, int]] = None,
                  num_extra_tokens: int = 0,
                  block_size: int = 3) -> torch.Tensor:
    """Bool ``(len(rows), Nk)`` keep mask of the given linear rows (no repair)."""
    device = rows.device
    if variant == 'random' or ratio == 0.0:
        return ~lanes_below(key, rows, nk, ratio_threshold(ratio))
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    k = block_size
    ph, pw = gh + k - 1, gw + k - 1
    gamma = seed_probability(ratio, block_footprint(variant, k))
    thr = torch.full((ph * pw + num_extra_tokens, ), ratio_threshold(gamma), dtype=torch.int32)
    thr[ph * pw:] = ratio_threshold(ratio)
    fired = lanes_below(key, rows, ph * pw + num_extra_tokens, thr.to(device))
    n = rows.numel()
    seeds = fired[:, :ph * pw].view(n, 1, ph, pw)
    seeds = seeds.to(torch.float16 if device.type == 'cuda' else torch.float32)
    if variant == 'block':
        dropped = F.max_pool2d(seeds, kernel_size=k, stride=1)
    else:  # cross: horizontal arm on the seed rows aligned with key rows, vertical arm likewise
        off = (k - 1) // 2
        horiz = F.max_pool2d(seeds[:, :, off:off + gh, :], kernel_size=(1, k), stride=1)
        vert = F.max_pool2d(seeds[:, :, :, off:off + gw], kernel_size=(k, 1), stride=1)
        dropped = torch.maximum(horiz, vert)
    keep = dropped.view(n, gh * gw) == 0
    if num_extra_tokens:
        keep = torch.cat([~fired[:, ph * pw:], keep], dim=1)
    return keep


@not_traced
def sample_keep_mask(shape: Sequence[int],
                     ratio: float,
                     variant: str = 'random',
                     *,
                     grid_hw: Optional[Tuple[int, int]] = None,
                     num_extra_tokens: int = 0,
                     block_size: int = 3,
                     key: Optional[int] = None,
                     device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Sample a boolean DropKey *keep* mask (True = key kept) of ``shape = (..., Nq, Nk)``.

    Args:
        shape: mask shape; every leading index and query gets an independent row.
        ratio: expected dropped fraction in ``[0, 1)``.
        variant: ``'random'`` | ``'block'`` (``block_size`` squares around seeds) | ``'cross'``
            (a plus sign with arms of total length ``block_size`` through each seed).
        grid_hw: ``(H, W)`` of the key grid (block/cross only); keys are ``num_extra_tokens``
            extra tokens followed by ``H*W`` grid keys in row-major order.
        num_extra_tokens: leading keys not on the grid, dropped i.i.d. with probability ``ratio``.
        block_size: side of the block / length of the cross arms (>= 1).
        key: the call key (:func:`~mmvitreg.ops.dropkey.random.call_key`); None = a fresh one.
        device: device of the mask.

    All-dropped rows are *not* repaired here (see :func:`repair_all_dropped`).
    """
    ratio = check_ratio(ratio)
    check_variant(variant)
    check_block_size(block_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f'DropKey mask shape needs (..., queries, keys), got {shape}')
    check_grid(variant if ratio > 0 else 'random', shape[-1], grid_hw, num_extra_tokens)
    key = next_key() if key is None else key
    return keep_mask_rows(key, shape, 0, shape[-2], ratio, variant, grid_hw, num_extra_tokens,
                          block_size, device)


def repaired_row_share(ratio: float,
                       num_keys: int,
                       variant: str = 'random',
                       grid_hw: Optional[Tuple[int, int]] = None,
                       num_extra_tokens: int = 0,
                       block_size: int = 3) -> float:
    """Expected share of a layer's query rows whose every key is dropped, i.e. repaired to plain
    attention (no host mask): ``p ** Nk`` for the random variant (``p`` quantised as the masks
    draw it); for block/cross, the share of 4096 rows of a fixed key (the drops are correlated).
    """
    from .random import call_key
    from .schedule import ratio_threshold
    if ratio <= 0:
        return 0.0
    if variant == 'random':
        return (ratio_threshold(ratio) / 65536.0)**num_keys
    rows = torch.arange(4096, dtype=torch.int64)
    keep = keep_for_rows(call_key(0, 0, seed=0, step=0, rank=0), rows, num_keys, ratio, variant,
                         grid_hw, num_extra_tokens, block_size)
    return float((~keep.any(-1)).double().mean())


def repair_all_dropped(keep: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``keep & allowed``, with rows whose kept-and-allowed set is empty set back to ``allowed``."""
    eff = keep if allowed is None else keep & allowed
    empty = eff.view(torch.uint8).amax(-1, keepdim=True) == 0
    if eff.device.type == 'cpu' and not bool(empty.any()):
        return eff  # the common case on CPU: skip the full-size OR
    if allowed is None:
        return eff | empty
    return eff | (empty & allowed)


def region_rows(shape: Sequence[int], region: Sequence[Tuple[int, int]],
                device: Union[str, torch.device]) -> torch.Tensor:
    """Linear row indices of a box ``region = ((b0, b1), (h0, h1), (q0, q1))`` of a 4-D mask
    ``shape = (B, H, Nq, Nk)`` (row ``(b * H + h) * Nq + q``), in row-major order of the box."""
    _, heads, nq, _ = (int(s) for s in shape)
    (b0, b1), (h0, h1), (q0, q1) = region
    ar = lambda a, b: torch.arange(a, b, dtype=torch.int64, device=device)  # noqa: E731
    rows = (ar(b0, b1)[:, None, None] * heads + ar(h0, h1)[None, :, None]) * nq
    return (rows + ar(q0, q1)[None, None, :]).reshape(-1)


def additive_mask_region(key: int,
                         shape: Sequence[int],
                         region: Sequence[Tuple[int, int]],
                         ratio: float,
                         dtype: torch.dtype,
                         device: Union[str, torch.device, None] = None,
                         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Random variant, no host mask: the additive mask (0 kept, ``-inf`` dropped) of a box of
    the 4-D mask ``shape``, written straight from the hash: by one compiled loop on CUDA and on
    CPU for boxes of at least :data:`.compiled.MIN_LOGITS` logits, else block by block from the
    lanes.

    ``region``: ``(b, h, q)`` ranges, optionally followed by a key range ``(k0, k1)`` (``k0`` a
    multiple of 4). Equals ``where(repair_all_dropped(keep), 0, -inf)`` for the same rows and
    keys. Rows are checked for being all dropped only when that has a probability above 1e-12
    for the call (``p ** Nk`` per row); below, such a row would keep ``-inf`` everywhere (flash
    returns zeros there). A box of a key range needs that probability to be negligible (a row
    can only be repaired as a whole). ``out``: optional flat buffer of at least ``rows * keys``
    elements to write into (one buffer serves every box of a call).
    """
    device = torch.device('cpu') if device is None else torch.device(device)
    full_nk = int(shape[-1])
    k0, k1 = region[3] if len(region) == 4 else (0, full_nk)
    nk = k1 - k0
    rows = region_rows(shape, region[:3], device)
    n = rows.numel()
    if out is None:
        out = torch.empty(n, nk, dtype=dtype, device=device)
    else:
        out = out[:n * nk].view(n, nk)
    thr = ratio_threshold(ratio) - (1 << 15)
    # (lane - thr + 0.5) * inf is -inf exactly for dropped lanes and +inf for kept ones, then
    # clamp(max=0); in float32, where int16 lanes and the half offset are exact
    offset = 0.5 - thr
    check = ratio**full_nk * n > 1e-12
    if check and nk != full_nk:
        raise ValueError(f'a key range of the DropKey mask needs all-dropped rows to be '
                         f'negligible, but ratio {ratio} with {full_nk} keys makes them likely')
    box = tuple(b - a for a, b in region[:3]) + (nk, )
    if not check and (device.type == 'cuda' or n * nk >= compiled.MIN_LOGITS):
        # one compiled loop from the hash to the float mask
        row_term, col_term, shift = lane_terms(key, rows, full_nk, (k0, k1))
        if compiled.compiled_additive_mask(row_term[:, None], col_term, shift,
                                           torch.tensor(ratio_threshold(ratio),
                                                        device=device),
                                           out) is not None:
            return out.view(box)
    scratch = None if dtype == torch.float32 else torch.empty(
        min(n, cpu_block_rows((nk + 3) // 4)) if device.type == 'cpu' else n, nk,
        dtype=torch.float32, device=device)

    def emit(r0, r1, lanes):
        block = out[r0:r1] if scratch is None else scratch[:r1 - r0]
        block.copy_(lanes)
        block.add_(offset).mul_(float('inf')).clamp_(max=0.0)
        if check:
            empty = lanes.amax(-1) < thr
            if bool(empty.any()):
                block[empty] = 0.0
        if scratch is not None:
            out[r0:r1].copy_(block)

    for_each_block(key, rows, full_nk, emit, cols=(k0, k1))
    return out.view(box)


def as_4d(t: torch.Tensor) -> torch.Tensor:
    """A mask broadcastable to ``(B, H, Nq, Nk)`` viewed with 4 dims (leading 1s added)."""
    return t.view((1, ) * (4 - t.dim()) + tuple(t.shape))


def split_host_mask(
        attn_mask: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The host's mask as ``(allowed, bias)``, each 4-D (:func:`as_4d`) or None: a boolean mask
    (True = may attend) is ``allowed``, a float one (additive) is ``bias``."""
    if attn_mask is None:
        return None, None
    if attn_mask.dtype == torch.bool:
        return as_4d(attn_mask), None
    return None, as_4d(attn_mask)


def empty_rows_possible(attn_mask: Optional[torch.Tensor], ratio: float, num_keys: int,
                        num_rows: int) -> bool:
    """Whether a fused kernel must look for query rows left without a key: always with a host
    mask, else when all ``num_keys`` keys of one of ``num_rows`` rows are dropped with a
    probability above 1e-9 per call."""
    return attn_mask is not None or ratio**num_keys * num_rows > 1e-9


def _slice_region(t: Optional[torch.Tensor], region) -> Optional[torch.Tensor]:
    """Slice a mask broadcastable to ``(B, H, Nq, Nk)`` to a box of (b, h, q) ranges."""
    if t is None:
        return None
    t = as_4d(t)
    idx = tuple(slice(a, b) if t.shape[i] > 1 else slice(None) for i, (a, b) in enumerate(region))
    return t[idx]


def full_region(shape) -> Tuple[Tuple[int, int], ...]:
    return ((0, shape[0]), (0, shape[1]), (0, shape[2]))


class MaskSpec:
    """Everything that determines the DropKey mask of one call; masks of any box of it."""

    def __init__(self, key: int, shape: Tuple[int, ...], ratio: float, variant: str,
                 grid_hw, num_extra_tokens: int, block_size: int,
                 attn_mask: Optional[torch.Tensor], device: torch.device) -> None:
        self.key, self.shape, self.ratio, self.variant = key, tuple(shape), ratio, variant
        self.grid_hw, self.num_extra_tokens, self.block_size = grid_hw, num_extra_tokens, block_size
        self.device = device
        self.allowed = self.bias = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                self.allowed = attn_mask
            else:
                self.bias = attn_mask

    def keep(self, region) -> torch.Tensor:
        """Bool mask of a (b, h, q) box: kept and allowed, all-dropped rows repaired."""
        rows = region_rows(self.shape, region, self.device)
        keep = keep_for_rows(self.key, rows, self.shape[-1], self.ratio, self.variant,
                             self.grid_hw, self.num_extra_tokens, self.block_size)
        keep = keep.view(tuple(b - a for a, b in region) + (self.shape[-1], ))
        if self.bias is not None:
            allowed = _slice_region(self.bias, region) > float('-inf')
        else:
            allowed = _slice_region(self.allowed, region)
        return repair_all_dropped(keep, allowed)

    def sdpa_mask(self, region, dtype: Optional[torch.dtype] = None,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SDPA mask of a box: the bool keep mask, or additive (``dtype``) with -inf.

        ``out``: a flat buffer to write an additive random-variant mask into (reused across the
        boxes of a call)."""
        if (dtype is not None and self.variant == 'random' and self.bias is None
                and self.allowed is None):
            return additive_mask_region(self.key, self.shape, region, self.ratio, dtype,
                                        self.device, out=out)
        keep = self.keep(region)
        if self.bias is None and dtype is None:
            return keep
        dtype = dtype or self.bias.dtype
        bias = _slice_region(self.bias, region)
        base = torch.zeros((), dtype=dtype, device=keep.device) if bias is None else bias.to(dtype)
        return torch.where(keep, base, torch.full((), float('-inf'), dtype=dtype,
                                                  device=keep.device))
