"""DropKey's CPU fast path: the fused flash kernel per box of the mask, key ranges merged by
their log-sum-exps (:func:`cpu_flash_dropkey_attention`).

The kernel (``aten._scaled_dot_product_flash_attention_for_cpu``) gets an additive mask written
from the hash into one buffer per pass, and saves only its log-sum-exp: backward regenerates each
box's mask (bit-identical, from the call key) and never recomputes the forward. Masks larger than
the memory budget (:mod:`.budget`) are split into boxes of whole batch entries, then head groups,
then queries (the largest that fit), so no full mask is held; where that would leave query chunks
under the kernel's large-tile size (:data:`FLASH_QUERY_BLOCK` queries), into key ranges of longer
query chunks instead, whose outputs are merged by their log-sum-exps (exact).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .budget import plan_chunks
from .masks import MaskSpec, full_region
from .tracing import not_traced

__all__ = ['cpu_flash_applies', 'cpu_flash_dropkey_attention', 'plan_regions',
           'pad_head_dims', 'FLASH_QUERY_BLOCK', 'MIN_KEY_CHUNK']

#: the CPU flash kernel tiles queries by 256 from 768 queries per call on, by 64 or 32 below
FLASH_QUERY_BLOCK = 768
#: the smallest key chunk :func:`plan_regions` splits keys into (one 512-key tile of the kernel)
MIN_KEY_CHUNK = 512


def cpu_flash_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                      bias: Optional[torch.Tensor], device_type: Optional[str] = None) -> bool:
    """Whether the CPU flash path takes the call: CPU (``device_type``, default q's), no
    attention dropout, a float dtype, the same batch/head shape and dtype for q, k, v, and no
    trainable float ``bias``."""
    if (device_type or q.device.type) != 'cpu' or dropout_p > 0:
        return False
    if not hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu'):
        return False  # pragma: no cover - torch < 2.2
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        return False
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or not (q.dtype == k.dtype == v.dtype):
        return False
    return bias is None or not bias.requires_grad


def cpu_flash_dropkey_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                spec: MaskSpec, scale: Optional[float], budget: int,
                                chunk_size: Optional[int] = None) -> torch.Tensor:
    """``softmax(mask(q k^T * scale)) v`` with the DropKey mask of ``spec`` by the CPU flash
    kernel, in boxes whose masks fit ``budget`` bytes (``chunk_size``: fixed queries per box).

    The kernel needs one head dim for q, k and v: a v head dim that differs from q's is served
    by zero-padding (:func:`pad_head_dims`; exact) and slicing the output."""
    dv = v.shape[-1]
    if q.shape[-1] != dv:
        scale = q.shape[-1]**-0.5 if scale is None else scale
        q, k, v = pad_head_dims(q, k, v)
    additive_only = spec.variant == 'random' and spec.bias is None and spec.allowed is None
    bytes_per_logit = q.element_size() if additive_only else 1 + q.element_size()
    # key ranges need rows that are never all dropped within one (< 1e-12 per call)
    nk = spec.shape[-1]
    rows = math.prod(spec.shape[:-1])
    split_keys = additive_only and \
        spec.ratio**MIN_KEY_CHUNK * rows * nk / MIN_KEY_CHUNK <= 1e-12
    regions = plan_regions(spec.shape, bytes_per_logit, budget, chunk_size,
                           split_keys=split_keys)
    out = _FlashCPUDropKey.apply(q, k, v, spec, regions, scale)
    return out if out.shape[-1] == dv else out[..., :dv]


def pad_head_dims(q: torch.Tensor, k: torch.Tensor,
                  v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v zero-padded (differentiably) to the wider of the q/k and v head dims: ``q k^T``
    is unchanged by zero columns of q and k, and zero columns of v only add zero output columns
    after the first ``v.shape[-1]`` (give the scale of the unpadded q explicitly)."""
    width = max(q.shape[-1], v.shape[-1])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))

    return pad(q), pad(k), pad(v)


def plan_regions(shape, bytes_per_logit: int, budget: int, chunk_size: Optional[int] = None,
                 min_heads: Optional[int] = None, split_keys: bool = False):
    """Boxes of (b, h, q) ranges whose masks fit ``budget``: whole batch entries first, then
    groups of heads, then queries, each the largest equal split that fits (``chunk_size``: fixed
    queries per box). Head groups keep at least ``min_heads`` heads (default: the intra-op
    threads), since the CPU flash backward parallelises over batch x heads only.

    ``split_keys``: where the query split would cut the queries into chunks shorter than
    :data:`FLASH_QUERY_BLOCK` (the CPU flash kernel then works on 4x smaller query tiles),
    split the keys instead, as (b, h, q, k) boxes: the fewest equal key chunks
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


def _mask_buffer(spec: MaskSpec, regions, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A flat buffer for the additive masks of the largest box (random variant, no host mask;
    None otherwise): the per-device workspace shared by all calls, so no call touches fresh
    memory (page faults would cost more than generating the mask)."""
    if spec.variant != 'random' or spec.bias is not None or spec.allowed is not None:
        return None
    numel = max(math.prod(b - a for a, b in _with_keys(region, spec.shape[-1]))
                for region in regions)
    return _workspace(spec.device, dtype, numel)


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
        buf = _mask_buffer(spec, regions, q.dtype)
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
                o, part_lse = flash(q[b0:b1, h0:h1, q0:q1], k[b0:b1, h0:h1, k0:k1],
                                    v[b0:b1, h0:h1, k0:k1], 0.0, False, attn_mask=mask, scale=scale)
                if k1 - k0 == nk:
                    out[b0:b1, h0:h1, q0:q1] = o
                    lse[b0:b1, h0:h1, q0:q1] = part_lse
                    continue
                merged = _merge_key_range(merged, o, part_lse, k0 == 0)
                if k1 == nk:
                    out[b0:b1, h0:h1, q0:q1] = merged[0]
                    lse[b0:b1, h0:h1, q0:q1] = merged[1]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.spec, ctx.regions, ctx.scale = spec, regions, scale
        return out

    @staticmethod
    @not_traced
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        spec, regions, scale = ctx.spec, ctx.regions, ctx.scale
        flash_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        buf = _mask_buffer(spec, regions, q.dtype)
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
