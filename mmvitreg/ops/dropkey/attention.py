"""DropKey attention: ``softmax(mask(q k^T * scale)) v`` without a slow path at real shapes.

Paths (chosen by :func:`dropkey_attention`):

* ``triton`` (CUDA, with attention dropout or a trainable float bias: DETR, QPIC, PlainViT): the
  Triton flash kernels hashing the mask per tile, dropout bits counter-based too
  (:mod:`.triton_flash`).
* ``flex`` (CUDA, no attention dropout, no trainable bias): FlexAttention with a ``score_mod``
  evaluating the mask hash and adding a float host bias (:mod:`.flex`).
* CPU flash (CPU, no attention dropout, no trainable bias): the fused flash kernel per box of the
  mask with a saved log-sum-exp and no recomputed forward (:mod:`.cpu_flash`).
* ``sdpa`` elsewhere (CUDA when neither kernel is available or applies; CPU with
  attention dropout or a trainable float bias): SDPA gets the boolean mask generated from the
  hash (:mod:`.masks`; one compiled loop on CUDA). On CPU with dropout or a trainable bias the
  host's own SDPA call takes the math path and holds the full logits anyway, so the mask is not
  chunked (:func:`host_materializes_logits`); elsewhere it is chunked over queries, with a
  recomputed backward, when it does not fit the memory budget (:mod:`.budget`). Attention
  dropout is SDPA's own (post-softmax, the global RNG, as the host's: the same dropout bits as
  the host's for the same RNG state; activation checkpointing and the chunked backward restore
  that state).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import compiled
from .budget import MEMORY_FRACTION, default_memory_budget, device_memory, plan_chunks
from .cpu_flash import (FLASH_QUERY_BLOCK, MIN_KEY_CHUNK, cpu_flash_applies,
                        cpu_flash_dropkey_attention, plan_regions)
from .masks import MaskSpec, check_grid, full_region
from .random import lane_terms, next_key
from .schedule import (check_backend, check_block_size, check_positive_int, check_ratio,
                       check_variant, ratio_threshold)
from .tracing import not_traced

__all__ = ['dropkey_attention', 'dropkey_path', 'DROPKEY_PATHS', 'naive_dropkey_attention',
           'host_materializes_logits',
           'default_memory_budget',
           'device_memory', 'plan_chunks', 'plan_regions', 'MaskSpec', 'MEMORY_FRACTION',
           'FLASH_QUERY_BLOCK', 'MIN_KEY_CHUNK']


def _slice_q(t: Optional[torch.Tensor], start: int, stop: int) -> Optional[torch.Tensor]:
    """Slice the query dimension (-2) of a broadcastable mask, if it is not broadcast."""
    if t is None or t.dim() < 2 or t.shape[-2] == 1:
        return t
    return t[..., start:stop, :]


@not_traced
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
        q, k, v: ``(B, heads, Nq, d)``, ``(B, heads, Nk, d)``, ``(B, heads, Nk, dv)``; ``dv``
            may differ from ``d`` on every path (the CPU flash path zero-pads to one head dim).
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
        backend: ``'auto'`` (on CUDA the Triton kernel for calls with attention dropout or a
            trainable bias, FlexAttention for the others, else SDPA; SDPA for the rest of the
            process, after one warning, if a kernel's compilation, launch or first-use check
            fails), ``'triton'`` / ``'flex'`` (that kernel; its failures raise) or ``'sdpa'``.

    A query row whose every allowed key is dropped is left unmasked by DropKey (plain attention
    with the host's mask only). Excluded from ``torch.compile`` tracing (:mod:`.tracing`).
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
    path = dropkey_path(q, k, v, ratio, variant, attn_mask=attn_mask, dropout_p=dropout_p,
                        backend=backend, chunk_size=chunk_size, memory_budget=memory_budget)
    if path == 'triton':
        from .triton_flash import triton_dropkey_attention
        out = triton_dropkey_attention(q, k, v, ratio, key, attn_mask=attn_mask,
                                       dropout_p=dropout_p, scale=scale,
                                       strict=backend == 'triton')
        if out is not None:  # None: the kernel failed (one warning), use SDPA
            return out
        path = dropkey_path(q, k, v, ratio, variant, attn_mask=attn_mask, dropout_p=dropout_p,
                            backend='sdpa', chunk_size=chunk_size, memory_budget=memory_budget)
    if path == 'flex':
        from .flex import flex_dropkey_attention
        out = flex_dropkey_attention(q, k, v, ratio, key, attn_mask=attn_mask, scale=scale,
                                     strict=backend == 'flex')
        if out is not None:  # None: the compile machinery failed (one warning), use SDPA
            return out
        path = dropkey_path(q, k, v, ratio, variant, attn_mask=attn_mask, dropout_p=dropout_p,
                            backend='sdpa', chunk_size=chunk_size, memory_budget=memory_budget)
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):  # what SDPA's autocast rule does
        dtype = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    shape = tuple(lead) + (nq, nk)
    spec = MaskSpec(key, shape, ratio, variant, grid_hw, num_extra_tokens, block_size, attn_mask,
                    q.device)
    if path == 'cpu_flash':
        budget = default_memory_budget(q.device) if memory_budget is None else int(memory_budget)
        return cpu_flash_dropkey_attention(q, k, v, spec, scale, budget, chunk_size)
    if path == 'sdpa' and spec.bias is not None and variant == 'random':
        out = _biased_sdpa(q, k, v, spec, dropout_p, scale)
        if out is not None:
            return out
    if path == 'sdpa':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=spec.sdpa_mask(
            full_region(shape)), dropout_p=dropout_p, scale=scale)
    chunk_size = chunk_size or _sdpa_chunk_size(q, k, dropout_p, attn_mask, memory_budget)
    return _ChunkedDropKeyAttention.apply(q, k, v, spec.bias, spec, chunk_size, dropout_p, scale)


def _biased_sdpa(q, k, v, spec: MaskSpec, dropout_p: float,
                 scale: Optional[float]) -> Optional[torch.Tensor]:
    """SDPA with the host's float bias masked by DropKey in one pass (:class:`_DropKeyBias`):
    no boolean mask, no ``where`` in autograd. None when a row of the output is NaN (every key
    dropped or masked by the bias; rare), for the caller's exact path to repair."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=_DropKeyBias.apply(spec.bias, spec),
                                         dropout_p=dropout_p, scale=scale)
    return None if bool(torch.isnan(out).any()) else out


class _DropKeyBias(torch.autograd.Function):
    """``where(dropped, -inf, bias)`` written by one compiled loop (:mod:`.compiled`). Its
    gradient is the incoming one unchanged (summed over the bias's broadcast dims): a dropped
    logit has probability 0, so the logits' gradient is already 0 there -- what ``where``'s
    backward would give, without saving or regenerating the mask."""

    @staticmethod
    def forward(ctx, bias, spec):
        ctx.bias_shape = bias.shape
        rows = math.prod(spec.shape[:-1])
        n = spec.shape[-1]
        row_term, col_term, shift = lane_terms(
            spec.key, torch.arange(rows, dtype=torch.int64, device=bias.device), n)
        threshold = torch.tensor(ratio_threshold(spec.ratio), device=bias.device)
        flat = bias.expand(spec.shape).reshape(rows, n)
        out = torch.empty(spec.shape, dtype=bias.dtype, device=bias.device)
        args = (row_term[:, None], col_term, shift, threshold, flat, out.view(rows, n))
        if rows * n < compiled.MIN_LOGITS or compiled.compiled_masked_bias(*args) is None:
            compiled.masked_bias(*args)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad.sum_to_size(ctx.bias_shape), None


#: the paths of :func:`dropkey_attention`, as :func:`dropkey_path` names them
DROPKEY_PATHS = ('plain', 'triton', 'flex', 'cpu_flash', 'sdpa', 'sdpa_chunked')


def dropkey_path(q: torch.Tensor,
                 k: torch.Tensor,
                 v: torch.Tensor,
                 ratio: float,
                 variant: str = 'random',
                 *,
                 attn_mask: Optional[torch.Tensor] = None,
                 dropout_p: float = 0.0,
                 backend: str = 'auto',
                 chunk_size: Optional[int] = None,
                 memory_budget: Optional[int] = None,
                 device_type: Optional[str] = None) -> str:
    """The path :func:`dropkey_attention` takes for these arguments (one of
    :data:`DROPKEY_PATHS`): ``'plain'`` (ratio 0: SDPA), ``'triton'`` (the Triton flash kernels,
    CUDA), ``'flex'`` (FlexAttention, CUDA),
    ``'cpu_flash'`` (the CPU flash kernel per box of the mask), ``'sdpa'`` (one SDPA call with the
    mask), ``'sdpa_chunked'`` (SDPA per query chunk, forward recomputed in backward).

    ``device_type`` (default: q's) asks what the call would take on another device, e.g.
    ``'cuda'`` from a CPU test (give ``memory_budget`` then). ``'flex'`` is before a compile
    failure: after one, ``backend='auto'`` takes the SDPA paths (:func:`.flex.flex_failure`);
    ``'triton'`` likewise (:func:`.triton_flash.triton_failure`)."""
    device_type = device_type or q.device.type
    if float(ratio) == 0.0:
        return 'plain'
    from .flex import flex_applies
    from .triton_flash import triton_applies
    bias = None if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask
    if backend == 'triton' or (
            backend == 'auto' and (dropout_p > 0 or (bias is not None and bias.requires_grad))
            and triton_applies(q, variant, attn_mask, v, device_type)):
        return 'triton'
    if backend == 'flex' or (backend == 'auto' and flex_applies(q, variant, dropout_p, attn_mask,
                                                                v, device_type)):
        return 'flex'
    if cpu_flash_applies(q, k, v, dropout_p, bias, device_type):
        return 'cpu_flash'
    if chunk_size is None and host_materializes_logits(q, dropout_p, bias, device_type):
        return 'sdpa'  # one call, as the host's: no forward recomputed in backward
    chunk_size = chunk_size or _sdpa_chunk_size(q, k, dropout_p, attn_mask, memory_budget,
                                                device_type)
    return 'sdpa' if chunk_size >= q.shape[-2] else 'sdpa_chunked'


def _sdpa_chunk_size(q: torch.Tensor, k: torch.Tensor, dropout_p: float,
                     attn_mask: Optional[torch.Tensor], memory_budget: Optional[int],
                     device_type: Optional[str] = None) -> int:
    """Queries per chunk of the SDPA path whose mask fits the memory budget."""
    device_type = device_type or q.device.type
    if memory_budget is None and device_type != q.device.type:
        raise ValueError(f'dropkey_path for device_type={device_type!r} of {q.device.type} '
                         f'tensors needs memory_budget')
    if memory_budget is None:
        memory_budget = default_memory_budget(q.device)
    nq, nk = q.shape[-2], k.shape[-2]
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(
        device_type) else q.dtype
    bytes_per_logit = 1 + dtype.itemsize  # the bits + the additive mask SDPA derives
    return min(nq, plan_chunks(nq, math.prod(lead) * nk * bytes_per_logit, int(memory_budget)))


def host_materializes_logits(q: torch.Tensor, dropout_p: float, bias: Optional[torch.Tensor],
                             device_type: Optional[str] = None) -> bool:
    """Whether the host's own SDPA call takes the math path, which holds ``(B, H, Nq, Nk)``
    logits and probabilities for backward anyway: CPU with attention dropout or with a float
    bias that requires grad (the CPU flash kernel supports neither). DropKey's mask there
    (``1 + itemsize`` bytes per logit, the bits kept for backward) is smaller than what the host
    holds, so it is not chunked: chunks would recompute the forward in backward (1.3-1.9x)."""
    return (device_type or q.device.type) == 'cpu' and (
        dropout_p > 0 or (bias is not None and bias.requires_grad))


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
    @not_traced
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
