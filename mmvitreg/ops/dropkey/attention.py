"""DropKey attention: ``softmax(mask(q k^T * scale)) v`` without a slow path at real shapes.

Paths (chosen by :func:`dropkey_attention`):

* ``flex`` (CUDA): FlexAttention with a ``score_mod`` evaluating the mask hash inside the kernel
  (:mod:`.flex`); no ``(B, heads, Nq, Nk)`` tensor exists.
* ``sdpa``: the mask is generated from the hash (:mod:`.masks`) and given to scaled dot-product
  attention. On CPU (no attention dropout) it calls the fused flash kernel directly with an
  additive mask written in cache-sized blocks into one buffer per pass, and saves only the
  kernel's log-sum-exp: backward regenerates the mask (bit-identical, from the call key) and never
  recomputes the forward. Masks larger than the memory budget are split into boxes of whole
  batch entries, then head groups, then queries (the largest that fit), so no full mask is held;
  where that would leave query chunks under the kernel's large-tile size (768 queries), into
  key ranges of longer query chunks instead, whose outputs are merged by their log-sum-exps.
  Elsewhere (CUDA fallback, attention dropout, a trainable float bias) SDPA gets the boolean mask,
  chunked over queries with a recomputed backward when it does not fit.

The memory budget (``memory_budget``: bytes for the mask of one box) defaults to 1/2048 of the
device's memory (:func:`default_memory_budget`): 12 MiB on a 24 GiB CPU machine, 40 MiB on an
80 GB GPU. A mask costs ``itemsize`` bytes per logit on the CPU flash path (the additive mask
only), ``1 + itemsize`` otherwise (bits + the additive mask SDPA derives from them).
"""
import math
import os
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .masks import (additive_mask_region, check_grid, keep_for_rows, region_rows,
                    repair_all_dropped)
from .random import next_key
from .schedule import (check_backend, check_block_size, check_positive_int, check_ratio,
                       check_variant)

__all__ = ['dropkey_attention', 'naive_dropkey_attention', 'default_memory_budget',
           'device_memory', 'plan_chunks', 'plan_regions', 'MaskSpec']

MEMORY_FRACTION = 2048
#: the CPU flash kernel tiles queries by 256 from 768 queries per call on, by 64 or 32 below
FLASH_QUERY_BLOCK = 768
#: the smallest key chunk :func:`plan_regions` splits keys into (one 512-key tile of the kernel)
MIN_KEY_CHUNK = 512


def device_memory(device: Union[str, torch.device]) -> int:
    """Total memory of ``device`` in bytes (CUDA: the GPU's; CPU: physical RAM)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def default_memory_budget(device: Union[str, torch.device]) -> int:
    """Default bytes for one chunk's mask: ``device_memory(device) // 2048`` (at least 1 MiB)."""
    return max(1 << 20, device_memory(device) // MEMORY_FRACTION)


def plan_chunks(num_queries: int, bytes_per_query: int, budget: int) -> int:
    """Queries per chunk: all if they fit ``budget``, else the largest equal chunks that fit."""
    per = max(1, budget // max(1, bytes_per_query))
    if per >= num_queries:
        return num_queries
    n = math.ceil(num_queries / per)
    return math.ceil(num_queries / n)


def _slice_q(t: Optional[torch.Tensor], start: int, stop: int) -> Optional[torch.Tensor]:
    """Slice the query dimension (-2) of a broadcastable mask, if it is not broadcast."""
    if t is None or t.dim() < 2 or t.shape[-2] == 1:
        return t
    return t[..., start:stop, :]


def _slice_region(t: Optional[torch.Tensor], region) -> Optional[torch.Tensor]:
    """Slice a mask broadcastable to ``(B, H, Nq, Nk)`` to a box of (b, h, q) ranges."""
    if t is None:
        return None
    t = t.view((1, ) * (4 - t.dim()) + tuple(t.shape))
    idx = tuple(slice(a, b) if t.shape[i] > 1 else slice(None) for i, (a, b) in enumerate(region))
    return t[idx]


def full_region(shape) -> Tuple[Tuple[int, int], ...]:
    return ((0, shape[0]), (0, shape[1]), (0, shape[2]))


def plan_regions(shape, bytes_per_logit: int, budget: int, chunk_size: Optional[int] = None,
                 min_heads: Optional[int] = None, split_keys: bool = False):
    """Boxes of (b, h, q) ranges whose masks fit ``budget``: whole batch entries first, then
    groups of heads, then queries, each the largest equal split that fits (``chunk_size``: fixed
    queries per box). Head groups keep at least ``min_heads`` heads (default: the intra-op
    threads), since the CPU flash backward parallelises over batch x heads only.

    ``split_keys``: where the query split would cut the queries into chunks shorter than
    :data:`FLASH_QUERY_BLOCK` (the CPU flash kernel then works on 4x smaller query tiles,
    ~15% slower), split the keys instead, as (b, h, q, k) boxes: the fewest equal key chunks
    (multiples of 4, at least :data:`MIN_KEY_CHUNK`) that leave query chunks of at least
    :data:`FLASH_QUERY_BLOCK`; plain (b, h, q) boxes where none does."""
    b, h, nq, nk = shape
    row = nk * bytes_per_logit
    min_heads = min(h, max(1, torch.get_num_threads() if min_heads is None else min_heads))
    if chunk_size is not None:
        cb, ch, cq = b, h, min(chunk_size, nq)
    elif b * h * nq * row <= budget:
        return [full_region(shape)]
    elif h * nq * row <= budget:
        cb, ch, cq = plan_chunks(b, h * nq * row, budget), h, nq
    elif min_heads * nq * row <= budget:
        cb, ch, cq = 1, plan_chunks(h, nq * row, budget), nq
    else:
        cb, ch = 1, plan_chunks(h, nq * row, min_heads * nq * row)
        cq = plan_chunks(nq, ch * row, budget)
        if split_keys and cq < min(nq, FLASH_QUERY_BLOCK):
            boxes = _key_split_boxes(shape, bytes_per_logit, budget, ch)
            if boxes:
                return boxes
    return [((b0, min(b, b0 + cb)), (h0, min(h, h0 + ch)), (q0, min(nq, q0 + cq)))
            for b0 in range(0, b, cb) for h0 in range(0, h, ch) for q0 in range(0, nq, cq)]


def _key_split_boxes(shape, bytes_per_logit: int, budget: int, heads: int):
    """(b, h, q, k) boxes of ``heads`` heads with query chunks >= FLASH_QUERY_BLOCK (see
    :func:`plan_regions`); [] when no key chunk of at least MIN_KEY_CHUNK allows that."""
    b, h, nq, nk = shape
    for n_key_chunks in range(2, nk // MIN_KEY_CHUNK + 1):
        ck = -(-math.ceil(nk / n_key_chunks) // 4) * 4
        cq = plan_chunks(nq, heads * ck * bytes_per_logit, budget)
        if cq >= FLASH_QUERY_BLOCK:
            return [((b0, b0 + 1), (h0, min(h, h0 + heads)), (q0, min(nq, q0 + cq)),
                     (k0, min(nk, k0 + ck)))
                    for b0 in range(b) for h0 in range(0, h, heads) for q0 in range(0, nq, cq)
                    for k0 in range(0, nk, ck)]
    return []


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

    def mask_buffer(self, regions, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """A flat buffer for the additive masks of the largest box (random variant, no host
        mask; None otherwise): the per-device workspace shared by all calls, so no call touches
        fresh memory (page faults would cost more than generating the mask)."""
        if self.variant != 'random' or self.bias is not None or self.allowed is not None:
            return None
        numel = max(math.prod(b - a for a, b in _with_keys(region, self.shape[-1]))
                    for region in regions)
        return _workspace(self.device, dtype, numel)


_WORKSPACES = {}


def _workspace(device: torch.device, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """A flat buffer reused by every call on this device/dtype (grows to the largest box)."""
    key = (str(device), dtype)
    buf = _WORKSPACES.get(key)
    if buf is None or buf.numel() < numel:
        _WORKSPACES.pop(key, None)
        buf = torch.empty(numel, dtype=dtype, device=device)
        _WORKSPACES[key] = buf
    return buf


def _use_cpu_flash(q, k, v, dropout_p, spec) -> bool:
    if q.device.type != 'cpu' or dropout_p > 0:
        return False
    if not hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu'):
        return False  # pragma: no cover - torch < 2.2
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        return False
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or not (q.dtype == k.dtype == v.dtype):
        return False
    return spec.bias is None or not spec.bias.requires_grad


def dropkey_attention(q: torch.Tensor,
                      k: torch.Tensor,
                      v: torch.Tensor,
                      ratio: float,
                      variant: str = 'random',
                      *,
                      attn_mask: Optional[torch.Tensor] = None,
                      dropout_p: float = 0.0,
                      scale: Optional[float] = None,
                      grid_hw: Optional[Tuple[int, int]] = None,
                      num_extra_tokens: int = 0,
                      block_size: int = 3,
                      key: Optional[int] = None,
                      chunk_size: Optional[int] = None,
                      memory_budget: Optional[int] = None,
                      backend: str = 'auto') -> torch.Tensor:
    """Scaled dot-product attention with DropKey.

    Args:
        q, k, v: ``(B, heads, Nq, d)``, ``(B, heads, Nk, d)``, ``(B, heads, Nk, dv)``.
        ratio: drop probability of each logit in ``[0, 1)``; 0 gives plain SDPA.
        variant, grid_hw, num_extra_tokens, block_size: see
            :func:`~mmvitreg.ops.dropkey.masks.sample_keep_mask`.
        attn_mask: the host's mask in ``F.scaled_dot_product_attention`` convention (bool, True
            = may attend; or additive float, ``-inf`` = may not), broadcastable to
            ``(B, heads, Nq, Nk)``; combined with DropKey.
        dropout_p: the host's attention-probability dropout (after the softmax; sdpa path).
        scale: logit scale (None = ``d ** -0.5``).
        key: the call key (:func:`~mmvitreg.ops.dropkey.random.call_key`); None = a fresh one.
            The same key gives the same mask on every path, device and chunking.
        chunk_size: queries per chunk (None = from ``memory_budget``).
        memory_budget: bytes one chunk's mask may use (None = :func:`default_memory_budget`).
        backend: ``'auto'`` (FlexAttention where it applies on CUDA, else SDPA), ``'flex'`` or
            ``'sdpa'``.

    A query row whose every allowed key is dropped is left unmasked by DropKey (plain attention
    with the host's mask only).
    """
    ratio = check_ratio(ratio)
    check_variant(variant)
    check_block_size(block_size)
    check_backend(backend)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f'dropkey_attention expects 4-D (B, heads, N, d) q/k/v, got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if ratio == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              scale=scale)
    nq, nk = q.shape[-2], k.shape[-2]
    check_grid(variant, nk, grid_hw, num_extra_tokens)
    key = next_key() if key is None else key
    if chunk_size is not None:
        check_positive_int(chunk_size, 'chunk_size')
    from .flex import flex_applies, flex_dropkey_attention
    if backend == 'flex' or (backend == 'auto' and flex_applies(q, variant, dropout_p,
                                                                attn_mask)):
        return flex_dropkey_attention(q, k, v, ratio, key, attn_mask=attn_mask, scale=scale)
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):  # what SDPA's autocast rule does
        dtype = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    shape = tuple(lead) + (nq, nk)
    spec = MaskSpec(key, shape, ratio, variant, grid_hw, num_extra_tokens, block_size, attn_mask,
                    q.device)
    budget = default_memory_budget(q.device) if memory_budget is None else int(memory_budget)
    bytes_per_logit = 1 + q.element_size()
    if _use_cpu_flash(q, k, v, dropout_p, spec):
        additive_only = variant == 'random' and attn_mask is None
        if additive_only:  # only the additive mask exists
            bytes_per_logit = q.element_size()
        # key ranges need rows that are never all dropped within one (< 1e-12 per call)
        rows = math.prod(shape[:-1])
        split_keys = additive_only and ratio**MIN_KEY_CHUNK * rows * nk / MIN_KEY_CHUNK <= 1e-12
        regions = plan_regions(shape, bytes_per_logit, budget, chunk_size, split_keys=split_keys)
        return _FlashCPUDropKey.apply(q, k, v, spec, regions, scale)
    if chunk_size is None:
        chunk_size = plan_chunks(nq, math.prod(lead) * nk * bytes_per_logit, budget)
    chunk_size = min(chunk_size, nq)
    if chunk_size >= nq:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=spec.sdpa_mask(
            full_region(shape)), dropout_p=dropout_p, scale=scale)
    return _ChunkedDropKeyAttention.apply(q, k, v, spec.bias, spec, chunk_size, dropout_p, scale)


class _FlashCPUDropKey(torch.autograd.Function):
    """CPU flash attention per box of (batch, head, query[, key]) ranges with the DropKey mask.

    Backward uses the saved log-sum-exp (no recomputed forward) and regenerates each box's mask
    from the call key (bit-identical) into one buffer per pass, so masks are never held
    between forward and backward. Boxes of a key range: forward merges the partial outputs by
    their log-sum-exps (in float32); backward gives the kernel the merged output and
    log-sum-exp, which makes each key range's gradients exact, and sums the query gradients.
    """

    @staticmethod
    def forward(ctx, q, k, v, spec, regions, scale):
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        buf = spec.mask_buffer(regions, q.dtype)
        if len(regions) == 1:
            mask = spec.sdpa_mask(regions[0], q.dtype, out=buf)
            out, lse = flash(q, k, v, 0.0, False, attn_mask=mask, scale=scale)
        else:
            b, h, nq = q.shape[:3]
            # the flash kernel's own output layout: (B, N, heads, d) memory, so the host's
            # ``transpose(1, 2).reshape(B, N, C)`` is a view, not a copy
            out = q.new_empty(b, nq, h, v.shape[-1]).transpose(1, 2)
            # the kernel's log-sum-exp: float32 for reduced precision, else q's dtype
            lse = q.new_empty(b, h, nq, dtype=torch.promote_types(q.dtype, torch.float32))
            nk = k.shape[2]
            merged = None
            for region in regions:
                (b0, b1), (h0, h1), (q0, q1), (k0, k1) = _with_keys(region, nk)
                mask = spec.sdpa_mask(region, q.dtype, out=buf)
                o, l = flash(q[b0:b1, h0:h1, q0:q1], k[b0:b1, h0:h1, k0:k1],
                             v[b0:b1, h0:h1, k0:k1], 0.0, False, attn_mask=mask, scale=scale)
                if k1 - k0 == nk:
                    out[b0:b1, h0:h1, q0:q1] = o
                    lse[b0:b1, h0:h1, q0:q1] = l
                    continue
                merged = _merge_key_range(merged, o, l, k0 == 0)
                if k1 == nk:
                    out[b0:b1, h0:h1, q0:q1] = merged[0]
                    lse[b0:b1, h0:h1, q0:q1] = merged[1]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.spec, ctx.regions, ctx.scale = spec, regions, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        spec, regions, scale = ctx.spec, ctx.regions, ctx.scale
        flash_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        buf = spec.mask_buffer(regions, q.dtype)
        if len(regions) == 1:
            mask = spec.sdpa_mask(regions[0], q.dtype, out=buf)
            dq, dk, dv = flash_bwd(grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask,
                                   scale=scale)
            return dq, dk, dv, None, None, None
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        nq, nk = q.shape[2], k.shape[2]
        for region in regions:
            (b0, b1), (h0, h1), (q0, q1), (k0, k1) = _with_keys(region, nk)
            mask = spec.sdpa_mask(region, q.dtype, out=buf)
            sl = (slice(b0, b1), slice(h0, h1), slice(q0, q1))
            keys = (slice(b0, b1), slice(h0, h1), slice(k0, k1))
            dq_c, dk_c, dv_c = flash_bwd(grad_out[sl], q[sl], k[keys], v[keys], out[sl],
                                         lse[sl], 0.0, False, attn_mask=mask, scale=scale)
            if k0 == 0:
                dq[sl] = dq_c
            else:
                dq[sl] += dq_c
            if q1 - q0 == nq:
                dk[keys] = dk_c
                dv[keys] = dv_c
            else:
                dk[keys] += dk_c
                dv[keys] += dv_c
        return dq, dk, dv, None, None, None


def _with_keys(region, nk: int):
    """A box with its key range ((0, nk) for (b, h, q) boxes)."""
    return tuple(region) if len(region) == 4 else tuple(region) + ((0, nk), )


def _merge_key_range(merged, out: torch.Tensor, lse: torch.Tensor, first: bool):
    """Fold the attention over one key range (``out``, ``lse``) into ``merged = (out, lse)``
    over the earlier key ranges of the same queries (in the log-sum-exp's dtype: float32 for
    reduced precision)."""
    if first:
        return out.to(lse.dtype), lse.clone()
    acc, acc_lse = merged
    total = torch.logaddexp(acc_lse, lse)
    acc.mul_((acc_lse - total).exp_().unsqueeze(-1))
    acc.add_(out * (lse - total).exp_().unsqueeze(-1))
    return acc, total


def _chunk_attention(q, k, v, bias, spec, q0, q1, dropout_p, scale):
    region = ((0, spec.shape[0]), (0, spec.shape[1]), (q0, q1))
    mask = spec.sdpa_mask(region) if bias is None else _where_bias(spec, bias, region)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          scale=scale)


def _where_bias(spec, bias, region):
    keep = spec.keep(region)
    return torch.where(keep, bias, torch.full((), float('-inf'), dtype=bias.dtype,
                                              device=bias.device))


class _ChunkedDropKeyAttention(torch.autograd.Function):
    """Query-chunked DropKey attention (any device/dropout/trainable bias) saving only q, k, v
    and the host mask: backward recomputes one chunk at a time with its mask regenerated from
    the call key and the attention-dropout RNG restored."""

    @staticmethod
    def forward(ctx, q, k, v, bias, spec, chunk_size, dropout_p, scale):
        nq = q.shape[-2]
        out = q.new_empty(torch.broadcast_shapes(q.shape[:-2], v.shape[:-2]) + (nq, v.shape[-1]))
        ctx.rng_states = []
        for q0 in range(0, nq, chunk_size):
            q1 = min(nq, q0 + chunk_size)
            if dropout_p > 0:
                ctx.rng_states.append(_rng_state(q.device))
            out[..., q0:q1, :] = _chunk_attention(q[..., q0:q1, :], k, v, _slice_q(bias, q0, q1),
                                                  spec, q0, q1, dropout_p, scale)
        ctx.save_for_backward(q, k, v, bias)
        ctx.args = (spec, chunk_size, dropout_p, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias = ctx.saved_tensors
        spec, chunk_size, dropout_p, scale = ctx.args
        need_q, need_k, need_v, need_b = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        db = torch.zeros_like(bias) if need_b else None
        kd = k.detach().requires_grad_(need_k)
        vd = v.detach().requires_grad_(need_v)
        nq = q.shape[-2]
        for idx, q0 in enumerate(range(0, nq, chunk_size)):
            q1 = min(nq, q0 + chunk_size)
            qc = q[..., q0:q1, :].detach().requires_grad_(need_q)
            bc = _slice_q(bias, q0, q1)
            if bc is not None:
                bc = bc.detach().requires_grad_(need_b)
            inputs = [t for t, need in ((qc, need_q), (kd, need_k), (vd, need_v), (bc, need_b))
                      if need]
            with torch.enable_grad(), torch.random.fork_rng(
                    devices=[q.device] if q.device.type == 'cuda' else [],
                    enabled=dropout_p > 0):
                if dropout_p > 0:
                    _set_rng_state(q.device, ctx.rng_states[idx])
                oc = _chunk_attention(qc, kd, vd, bc, spec, q0, q1, dropout_p, scale)
            grads = iter(torch.autograd.grad(oc, inputs, grad_out[..., q0:q1, :]))
            if need_q:
                dq[..., q0:q1, :] = next(grads)
            if need_k:
                dk += next(grads)
            if need_v:
                dv += next(grads)
            if need_b:
                g = next(grads)
                if bias.dim() >= 2 and bias.shape[-2] != 1:  # bias not broadcast over queries
                    db[..., q0:q1, :] += g
                else:
                    db += g
        return dq, dk, dv, db, None, None, None, None


def _rng_state(device: torch.device):
    if device.type == 'cuda':
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return torch.get_rng_state(), None


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def naive_dropkey_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ratio: float,
                            scale: Optional[float] = None) -> torch.Tensor:
    """The paper's two-line DropKey on an explicit attention matrix (reference / benchmark only).

    ``attn = q k^T * scale; attn += bernoulli(ratio) * -1e12; softmax; @ v`` -- materialises the
    full logits and a float mask from the global RNG, and yields NaN in fp16 when a row is fully
    dropped.
    """
    scale = q.shape[-1]**-0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn + torch.bernoulli(torch.ones_like(attn) * ratio) * -1e12
    return attn.softmax(dim=-1) @ v
