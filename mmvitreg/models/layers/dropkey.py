"""DropKey (Li et al., "DropKey for Vision Transformer", CVPR 2023): functional core + module.

What the paper specifies
    * In training, every attention *logit* is dropped independently (per sample, head, query and
      key) with probability ``p`` **before** the softmax, so the softmax renormalises over the
      kept keys (the paper's two lines: ``attn = attn + bernoulli(p) * -1e12``). Nothing is
      dropped at test time and, unlike Dropout, nothing is rescaled.
    * The ratio decreases linearly with depth (first layer ``p``, last layer ``min_ratio``, 0 in
      the paper); constant and increasing schedules are the paper's ablations.
    * Structured variants on the 2-D key grid: DropKey-Block (square windows of keys around seed
      points) and DropKey-Cross (cross-shaped row/column stripes around seed points).

Where this implementation deliberately differs (all documented on the functions below)
    * Masks are boolean and fed to ``F.scaled_dot_product_attention`` instead of adding
      ``-1e12`` (which overflows to ``-inf`` in fp16; a fully dropped row then becomes NaN).
    * **All-dropped rows.** If every (allowed) key of a query is dropped, that query's row is
      left *unmasked by DropKey*, i.e. it falls back to plain attention for that query (the host's
      own masks, e.g. key padding, still apply). In the paper's fp32 code such a row degenerates
      to a uniform average over all keys (every logit is ``-1e12`` up to rounding); in fp16 it is
      NaN. The event has probability ``p ** num_keys`` per row (e.g. 1e-9 for p=0.9, 197 keys).
    * Random masks are drawn as 16-bit integers (fast on CPU), so ``p`` is quantised to
      ``round(p * 65536) / 65536`` (error < 8e-6).
    * Block/Cross seeds are drawn on the key grid padded by the structure's size so that every
      key is covered by exactly ``F`` seed positions (``F`` = footprint: ``b*b`` for blocks,
      ``2b-1`` for crosses). The seed probability ``gamma = 1 - (1 - p) ** (1 / F)`` then makes the
      expected dropped fraction exactly ``p`` for every key, borders included. Extra (class,
      distillation) tokens are not on the grid; they are dropped independently with probability
      ``p``.
    * For large token counts queries are processed in chunks, each recomputed in backward
      (activation checkpointing) with its mask regenerated from a per-call seed, so no
      ``(B, heads, N, N)`` mask is ever held whole.
    * RNG: each call draws one seed from the global torch RNG (so ``torch.manual_seed`` makes
      masks reproducible) and mixes in the distributed rank (so masks differ across DDP ranks even
      when mmengine seeds every rank identically).
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvitreg.registry import MODELS

__all__ = [
    'DROPKEY_SCHEDULES', 'DROPKEY_VARIANTS', 'check_ratio', 'dropkey_ratios', 'block_footprint',
    'seed_probability', 'make_dropkey_seed', 'sample_keep_mask', 'dropkey_attention',
    'naive_dropkey_attention', 'DropKey', 'dropkey_modules', 'set_dropkey_enabled',
    'set_dropkey_sampling', 'apply_dropkey', 'attach_dropkey'
]

DROPKEY_SCHEDULES = ('decrease', 'constant', 'increase')
DROPKEY_VARIANTS = ('random', 'block', 'cross')

#: above this many mask elements (batch * heads * queries * keys) queries are chunked ...
MAX_UNCHUNKED_ELEMENTS = 1 << 25
#: ... into chunks of about this many mask elements each
DEFAULT_CHUNK_ELEMENTS = 1 << 20
_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant to spread per-chunk seeds
_SEED_MOD = 1 << 63


# ------------------------------------------------------------------------------------------------
# validation and schedules
# ------------------------------------------------------------------------------------------------
def check_ratio(ratio: float, name: str = 'ratio') -> float:
    """Return ``ratio`` as float if it is in ``[0, 1)``; raise ``ValueError`` otherwise."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f'DropKey {name} must be a number in [0, 1), got {ratio!r}') from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f'DropKey {name} must be in [0, 1), got {ratio!r}')
    return value


def check_variant(variant: str) -> str:
    if variant not in DROPKEY_VARIANTS:
        raise ValueError(
            f'DropKey variant must be one of {list(DROPKEY_VARIANTS)}, got {variant!r}')
    return variant


def check_block_size(block_size: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f'DropKey block_size must be an integer >= 1, got {block_size!r}')
    return block_size


def dropkey_ratios(num_layers: int,
                   ratio: float,
                   schedule: str = 'decrease',
                   min_ratio: float = 0.0) -> List[float]:
    """Per-layer drop ratios of a stack of ``num_layers`` attention layers (first = shallowest).

    ``'decrease'`` (paper default): linear from ``ratio`` (first layer) to ``min_ratio`` (last
    layer); ``'constant'``: ``ratio`` everywhere; ``'increase'``: linear from ``min_ratio`` to
    ``ratio``. A single layer gets ``ratio``.
    """
    ratio = check_ratio(ratio)
    min_ratio = check_ratio(min_ratio, 'min_ratio')
    if schedule not in DROPKEY_SCHEDULES:
        raise ValueError(
            f'DropKey schedule must be one of {list(DROPKEY_SCHEDULES)}, got {schedule!r}')
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f'DropKey num_layers must be an integer >= 1, got {num_layers!r}')
    if schedule == 'constant' or num_layers == 1:
        return [ratio] * num_layers
    start, end = (ratio, min_ratio) if schedule == 'decrease' else (min_ratio, ratio)
    # convex combination: exact end points (start + i * step can undershoot 0 by 1e-17)
    ts = [i / (num_layers - 1) for i in range(num_layers)]
    return [start * (1.0 - t) + end * t for t in ts]


def block_footprint(variant: str, block_size: int) -> int:
    """Number of keys one seed drops (and of seed positions covering one key): 1, b*b or 2b-1."""
    check_variant(variant)
    check_block_size(block_size)
    if variant == 'random':
        return 1
    return block_size * block_size if variant == 'block' else 2 * block_size - 1


def seed_probability(ratio: float, footprint: int) -> float:
    """Seed probability ``gamma = 1 - (1 - p) ** (1 / F)``.

    With every key covered by exactly ``F`` independent seed positions, a key survives with
    probability ``(1 - gamma) ** F = 1 - p``: the expected dropped fraction equals ``ratio``.
    (DropBlock's ``p / b**2`` approximation under-drops for large ``p``.)
    """
    ratio = check_ratio(ratio)
    return 1.0 - (1.0 - ratio)**(1.0 / footprint)


# ------------------------------------------------------------------------------------------------
# randomness
# ------------------------------------------------------------------------------------------------
def _rank() -> int:
    try:
        from mmengine.dist import get_rank
        return get_rank()
    except Exception:  # pragma: no cover - mmengine always present in this project
        return 0


def make_dropkey_seed(rank: Optional[int] = None) -> int:
    """One 63-bit seed for a DropKey call: drawn from the global (CPU) torch RNG, rank mixed in.

    ``torch.manual_seed(s)`` makes the sequence of seeds reproducible; mixing in the rank makes
    ranks that were seeded identically (mmengine's default) draw different masks.
    """
    base = int(torch.randint(0, 1 << 62, (), dtype=torch.int64).item())
    rank = _rank() if rank is None else rank
    return (base + (rank + 1) * _SEED_MIX) % _SEED_MOD


def _generator(seed: int, chunk: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed((seed + chunk * _SEED_MIX * 3 + chunk) % _SEED_MOD)
    return gen


def _uniform_drop(shape: Sequence[int], prob: float, generator: Optional[torch.Generator],
                  device: torch.device) -> torch.Tensor:
    """Boolean tensor, True with probability ``prob`` (quantised to 1/65536), via 16-bit ints."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    threshold = int(round(prob * 65536))
    if threshold <= 0 or numel == 0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    if threshold >= 65536:
        return torch.ones(shape, dtype=torch.bool, device=device)
    # four 16-bit lanes per 64-bit draw: ~8x faster than torch.rand on CPU
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((numel + 3) // 4, ),
                          dtype=torch.int64, generator=generator, device=device)
    lanes = words.view(torch.int16)[:numel].view(shape)
    return lanes < (threshold - 32768)


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def sample_keep_mask(shape: Sequence[int],
                     ratio: float,
                     variant: str = 'random',
                     *,
                     grid_hw: Optional[Tuple[int, int]] = None,
                     num_extra_tokens: int = 0,
                     block_size: int = 3,
                     generator: Optional[torch.Generator] = None,
                     device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Sample a boolean DropKey *keep* mask (True = key kept) of ``shape = (..., Nq, Nk)``.

    Args:
        shape: mask shape; the last dimension indexes keys, all others (batch, head, query) get
            independent masks.
        ratio: expected dropped fraction in ``[0, 1)``.
        variant: ``'random'`` (i.i.d. Bernoulli per logit, the paper's DropKey), ``'block'``
            (``block_size x block_size`` squares of keys around seeds) or ``'cross'`` (a plus
            sign with arms of total length ``block_size`` through each seed).
        grid_hw: ``(H, W)`` of the key grid (block/cross only); keys are laid out as
            ``num_extra_tokens`` extra tokens followed by ``H*W`` grid keys in row-major order.
        num_extra_tokens: leading keys not on the grid (class/distillation tokens), dropped
            i.i.d. with probability ``ratio``.
        block_size: side of the block / length of the cross arms (>= 1).
        generator: torch generator (None = global RNG).
        device: device of the mask.

    Seeds are drawn on the grid padded by ``block_size - 1`` so every key is covered by exactly
    :func:`block_footprint` seed positions, calibrated with :func:`seed_probability`: the
    expected dropped fraction is ``ratio`` for every key. All-dropped rows are *not* repaired
    here (see :func:`dropkey_attention`).
    """
    ratio = check_ratio(ratio)
    check_variant(variant)
    check_block_size(block_size)
    device = torch.device(device) if device is not None else torch.device('cpu')
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1:
        raise ValueError(f'DropKey mask shape needs a key dimension, got {shape}')
    if variant == 'random' or ratio == 0.0:
        return ~_uniform_drop(shape, ratio, generator, device)

    if grid_hw is None:
        raise ValueError(f"DropKey variant {variant!r} needs grid_hw, the (H, W) of the key grid")
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    num_keys = shape[-1]
    if num_extra_tokens < 0 or gh * gw + num_extra_tokens != num_keys:
        raise ValueError(
            f'DropKey grid_hw={tuple(grid_hw)} with num_extra_tokens={num_extra_tokens} does not '
            f'match the {num_keys} keys of the attention')
    rows = math.prod(shape[:-1])
    k = block_size
    gamma = seed_probability(ratio, block_footprint(variant, k))
    ph, pw = gh + k - 1, gw + k - 1
    seeds = _uniform_drop((rows, 1, ph, pw), gamma, generator, device)
    dtype = torch.float16 if device.type == 'cuda' else torch.float32
    seeds = seeds.to(dtype)
    if variant == 'block':
        dropped = F.max_pool2d(seeds, kernel_size=k, stride=1)
    else:  # cross: horizontal arm on the seed rows aligned with key rows, vertical arm likewise
        off = (k - 1) // 2
        horiz = F.max_pool2d(seeds[:, :, off:off + gh, :], kernel_size=(1, k), stride=1)
        vert = F.max_pool2d(seeds[:, :, :, off:off + gw], kernel_size=(k, 1), stride=1)
        dropped = torch.maximum(horiz, vert)
    grid_keep = (dropped.view(rows, gh * gw) == 0)
    if num_extra_tokens:
        extra_keep = ~_uniform_drop((rows, num_extra_tokens), ratio, generator, device)
        grid_keep = torch.cat([extra_keep, grid_keep], dim=1)
    return grid_keep.view(shape)


def _repair_all_dropped(keep: torch.Tensor, allowed: Optional[torch.Tensor]) -> torch.Tensor:
    """Rows whose kept & allowed set is empty fall back to ``allowed`` (plain attention)."""
    eff = keep if allowed is None else keep & allowed
    empty = eff.view(torch.uint8).amax(-1, keepdim=True) == 0
    if eff.device.type == 'cpu' and not bool(empty.any()):
        return eff  # the common case on CPU: skip the full-size OR
    if allowed is None:
        return eff | empty
    return eff | (empty & allowed)


# ------------------------------------------------------------------------------------------------
# attention
# ------------------------------------------------------------------------------------------------
def _split_mask(attn_mask: Optional[torch.Tensor]):
    """SDPA-convention mask -> (allowed bool or None, additive float bias or None)."""
    if attn_mask is None:
        return None, None
    if attn_mask.dtype == torch.bool:
        return attn_mask, None
    return None, attn_mask


def _slice_q(t: Optional[torch.Tensor], start: int, stop: int) -> Optional[torch.Tensor]:
    """Slice the query dimension (-2) of a broadcastable mask, if it is not broadcast."""
    if t is None or t.dim() < 2 or t.shape[-2] == 1:
        return t
    return t[..., start:stop, :]


def _chunk_mask(q: torch.Tensor, k: torch.Tensor, allowed: Optional[torch.Tensor],
                bias: Optional[torch.Tensor], ratio: float, variant: str, grid_hw,
                num_extra_tokens: int, block_size: int, seed: int, chunk: int) -> torch.Tensor:
    """The SDPA mask of one query chunk (a pure function of ``(seed, chunk)``): bool keep mask,
    or the host's float bias with dropped keys set to ``-inf``."""
    shape = torch.broadcast_shapes(q.shape[:-1], k.shape[:-2] + (1, )) + (k.shape[-2], )
    gen = _generator(seed, chunk, q.device)
    keep = sample_keep_mask(shape, ratio, variant, grid_hw=grid_hw,
                            num_extra_tokens=num_extra_tokens, block_size=block_size,
                            generator=gen, device=q.device)
    if bias is not None:
        bias = bias.to(q.dtype)
        allowed = bias > float('-inf')
    keep = _repair_all_dropped(keep, allowed)
    if bias is not None:
        return torch.where(keep, bias, bias.new_tensor(float('-inf')))
    return keep


def _chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     allowed: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                     ratio: float, variant: str, grid_hw, num_extra_tokens: int, block_size: int,
                     seed: int, chunk: int, dropout_p: float, scale: Optional[float]) -> torch.Tensor:
    """DropKey attention of one query chunk; the mask is a pure function of (seed, chunk)."""
    mask = _chunk_mask(q, k, allowed, bias, ratio, variant, grid_hw, num_extra_tokens,
                       block_size, seed, chunk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          scale=scale)


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
                      seed: Optional[int] = None,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
    """Scaled dot-product attention with DropKey: ``softmax(mask(q k^T * scale)) v``.

    Args:
        q, k, v: ``(B, heads, Nq, d)``, ``(B, heads, Nk, d)``, ``(B, heads, Nk, dv)``.
        ratio: drop probability of each logit in ``[0, 1)``; 0 gives plain SDPA.
        variant, grid_hw, num_extra_tokens, block_size: see :func:`sample_keep_mask`.
        attn_mask: the host's own mask in ``F.scaled_dot_product_attention`` convention (bool,
            True = may attend; or an additive float bias, ``-inf`` = may not), broadcastable to
            ``(B, heads, Nq, Nk)``. DropKey is combined with it.
        dropout_p: attention-probability dropout of the host (applied after the softmax).
        scale: logit scale (None = ``d ** -0.5``).
        seed: per-call seed (None = :func:`make_dropkey_seed`); a fixed seed gives a fixed mask.
        chunk_size: queries per chunk. None = one chunk while ``B*heads*Nq*Nk`` is at most
            ``MAX_UNCHUNKED_ELEMENTS`` (2**25: ViT-sized inputs, fastest), else chunks of about
            ``DEFAULT_CHUNK_ELEMENTS`` (2**20) mask elements. With several chunks and autograd
            on, each chunk is recomputed in backward from its seed, so peak memory holds one
            chunk's mask only.

    A query row whose every allowed key is dropped is left unmasked by DropKey (plain attention
    with the host's mask only); see the module docstring.
    """
    ratio = check_ratio(ratio)
    check_variant(variant)
    check_block_size(block_size)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f'dropkey_attention expects 4-D (B, heads, N, d) q/k/v, got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if ratio == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              scale=scale)
    if seed is None:
        seed = make_dropkey_seed()
    allowed, bias = _split_mask(attn_mask)
    nq, nk = q.shape[-2], k.shape[-2]
    rows_per_query = max(1, math.prod(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])) * nk)
    if chunk_size is None:
        if rows_per_query * nq <= MAX_UNCHUNKED_ELEMENTS:
            chunk_size = nq
        else:
            chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // rows_per_query)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f'DropKey chunk_size must be an integer >= 1, got {chunk_size!r}')
    common = (ratio, variant, grid_hw, num_extra_tokens, block_size, seed)
    if chunk_size >= nq:
        return _chunk_attention(q, k, v, allowed, bias, *common, 0, dropout_p, scale)
    return _ChunkedDropKeyAttention.apply(q, k, v, allowed, bias, common, chunk_size, dropout_p,
                                          scale)


class _ChunkedDropKeyAttention(torch.autograd.Function):
    """Query-chunked DropKey attention that saves only q, k, v (and the host mask).

    Forward computes each chunk without autograd; backward recomputes one chunk at a time (its
    mask regenerated from ``(seed, chunk)``, attention-dropout RNG restored) and accumulates the
    gradients into preallocated buffers, so no ``(B, heads, N, N)`` tensor ever exists.
    """

    @staticmethod
    def forward(ctx, q, k, v, allowed, bias, common, chunk_size, dropout_p, scale):
        nq = q.shape[-2]
        out = q.new_empty(torch.broadcast_shapes(q.shape[:-2], v.shape[:-2]) +
                          (nq, v.shape[-1]))
        ctx.rng_states = []
        ctx.autocast = (q.device.type, torch.is_autocast_enabled(q.device.type),
                        torch.get_autocast_dtype(q.device.type))
        for idx, start in enumerate(range(0, nq, chunk_size)):
            stop = min(nq, start + chunk_size)
            if dropout_p > 0:
                ctx.rng_states.append(_rng_state(q.device))
            out[..., start:stop, :] = _chunk_attention(
                q[..., start:stop, :], k, v, _slice_q(allowed, start, stop),
                _slice_q(bias, start, stop), *common, idx, dropout_p, scale)
        ctx.save_for_backward(q, k, v, allowed, bias, out)
        ctx.args = (common, chunk_size, dropout_p, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, allowed, bias, out = ctx.saved_tensors
        common, chunk_size, dropout_p, scale = ctx.args
        need_q, need_k, need_v, _, need_b = ctx.needs_input_grad[:5]
        if dropout_p == 0 and not need_b and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
            return _explicit_chunked_backward(q, k, v, allowed, bias, out, grad_out, common,
                                              chunk_size, scale, need_q, need_k, need_v)
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        db = torch.zeros_like(bias) if need_b else None
        kd = k.detach().requires_grad_(need_k)
        vd = v.detach().requires_grad_(need_v)
        device_type, ac_enabled, ac_dtype = ctx.autocast
        nq = q.shape[-2]
        for idx, start in enumerate(range(0, nq, chunk_size)):
            stop = min(nq, start + chunk_size)
            qc = q[..., start:stop, :].detach().requires_grad_(need_q)
            bc = _slice_q(bias, start, stop)
            if bc is not None:
                bc = bc.detach().requires_grad_(need_b)
            inputs = [t for t, need in ((qc, need_q), (kd, need_k), (vd, need_v), (bc, need_b))
                      if need]
            with torch.enable_grad(), torch.random.fork_rng(
                    devices=[q.device] if q.device.type == 'cuda' else [],
                    enabled=dropout_p > 0), torch.autocast(device_type, dtype=ac_dtype,
                                                           enabled=ac_enabled):
                if dropout_p > 0:
                    _set_rng_state(q.device, ctx.rng_states[idx])
                oc = _chunk_attention(qc, kd, vd, _slice_q(allowed, start, stop), bc, *common,
                                      idx, dropout_p, scale)
            grads = iter(torch.autograd.grad(oc, inputs, grad_out[..., start:stop, :]))
            if need_q:
                dq[..., start:stop, :] = next(grads)
            if need_k:
                dk += next(grads)
            if need_v:
                dv += next(grads)
            if need_b:
                g = next(grads)
                if bias.dim() >= 2 and bias.shape[-2] != 1:  # bias not broadcast over queries
                    db[..., start:stop, :] += g
                else:
                    db += g
        return dq, dk, dv, None, db, None, None, None, None


def _explicit_chunked_backward(q, k, v, allowed, bias, out, grad_out, common, chunk_size, scale,
                               need_q, need_k, need_v):
    """Flash-style chunked backward with in-place accumulation (no full-size temporaries).

    Per chunk: ``P = softmax(mask(q_c k^T * s))``, ``dv += P^T g_c``, ``dP = g_c v^T``,
    ``dS = P * (dP - rowsum(g_c * o_c))``, ``dq_c = s * dS k``, ``dk += s * dS^T q_c`` -- in
    fp32, with the chunk's mask regenerated from its seed.
    """
    lead = q.shape[:-2]
    nq, d = q.shape[-2:]
    nk, dvd = v.shape[-2:]
    bh = math.prod(lead)
    scale = d**-0.5 if scale is None else scale
    f32 = torch.float32
    qf = q.reshape(bh, nq, d).to(f32)
    kf = k.reshape(bh, nk, d).to(f32)
    vf = v.reshape(bh, nk, dvd).to(f32)
    of = out.reshape(bh, nq, dvd).to(f32)
    gf = grad_out.reshape(bh, nq, dvd).to(f32)
    dq = torch.zeros(bh, nq, d, dtype=f32, device=q.device) if need_q else None
    dk = torch.zeros(bh, nk, d, dtype=f32, device=q.device) if need_k else None
    dv = torch.zeros(bh, nk, dvd, dtype=f32, device=q.device) if need_v else None
    for idx, start in enumerate(range(0, nq, chunk_size)):
        stop = min(nq, start + chunk_size)
        c = stop - start
        qc = q[..., start:stop, :]
        mask = _chunk_mask(qc, k, _slice_q(allowed, start, stop), _slice_q(bias, start, stop),
                           *common, idx)
        mask = mask.expand(*lead, c, nk).reshape(bh, c, nk)
        logits = torch.bmm(qf[:, start:stop], kf.transpose(1, 2)).mul_(scale)
        if mask.dtype == torch.bool:
            logits.masked_fill_(~mask, float('-inf'))
        else:
            logits.add_(mask.to(f32))
        probs = torch.softmax(logits, dim=-1)
        del logits
        g = gf[:, start:stop]
        if need_v:
            dv.baddbmm_(probs.transpose(1, 2), g)
        dp = torch.bmm(g, vf.transpose(1, 2))
        delta = (g * of[:, start:stop]).sum(-1, keepdim=True)
        ds = dp.sub_(delta).mul_(probs)
        del probs
        if need_q:
            dq[:, start:stop].baddbmm_(ds, kf, alpha=scale)
        if need_k:
            dk.baddbmm_(ds.transpose(1, 2), qf[:, start:stop], alpha=scale)
    res = []
    for t, ref in ((dq, q), (dk, k), (dv, v)):
        res.append(None if t is None else t.view(ref.shape).to(ref.dtype))
    return res[0], res[1], res[2], None, None, None, None, None, None


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
    full logits and a float mask, and yields NaN in fp16 when a row is fully dropped.
    """
    scale = q.shape[-1]**-0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn + torch.bernoulli(torch.ones_like(attn) * ratio) * -1e12
    return attn.softmax(dim=-1) @ v


# ------------------------------------------------------------------------------------------------
# module
# ------------------------------------------------------------------------------------------------
@MODELS.register_module()
class DropKey(nn.Module):
    """Parameter-free DropKey attention core: ``forward(q, k, v, ...)`` -> attention output.

    Active only while ``training`` (or while :func:`set_dropkey_sampling` forces Monte-Carlo
    sampling at test time), ``enabled`` (the final-phase hook clears it) and ``ratio > 0``;
    otherwise it is exactly ``F.scaled_dot_product_attention``. It has no parameters and no
    buffers, so adding it never changes a state dict.

    Args:
        ratio: drop probability of this layer, in ``[0, 1)``.
        variant: ``'random'`` | ``'block'`` | ``'cross'``.
        block_size: block side / cross length for the structured variants.
        grid_hw: fixed key grid; None = from the caller, then from ``grid_source`` (an object
            with an ``hw`` attribute set by a forward hook), then a square grid inferred from
            the key count (``Nk = s*s + extra`` with the largest ``s``).
        num_extra_tokens: leading non-grid keys; None = ``Nk - H*W``.
        chunk_size: queries per chunk (see :func:`dropkey_attention`).
    """

    def __init__(self,
                 ratio: float = 0.1,
                 variant: str = 'random',
                 block_size: int = 3,
                 grid_hw: Optional[Tuple[int, int]] = None,
                 num_extra_tokens: Optional[int] = None,
                 chunk_size: Optional[int] = None) -> None:
        super().__init__()
        self.ratio = check_ratio(ratio)
        self.variant = check_variant(variant)
        self.block_size = check_block_size(block_size)
        self.grid_hw = tuple(grid_hw) if grid_hw is not None else None
        self.num_extra_tokens = num_extra_tokens
        self.chunk_size = chunk_size
        self.enabled = True
        self.sampling = False
        self.grid_source = None

    @property
    def active(self) -> bool:
        return (self.training or self.sampling) and self.enabled and self.ratio > 0

    def _resolve_grid(self, num_keys: int, grid_hw, num_extra_tokens):
        if self.variant == 'random':
            return None, 0
        hw = grid_hw or self.grid_hw
        if hw is None and self.grid_source is not None:
            hw = getattr(self.grid_source, 'hw', None)
        if hw is None:
            side = math.isqrt(num_keys)
            hw = (side, side)
        hw = (int(hw[0]), int(hw[1]))
        extra = num_extra_tokens if num_extra_tokens is not None else self.num_extra_tokens
        if extra is None:
            extra = num_keys - hw[0] * hw[1]
        if extra < 0 or hw[0] * hw[1] + extra != num_keys:
            raise ValueError(
                f'DropKey variant {self.variant!r} needs keys on a 2-D grid, but the attention '
                f'has {num_keys} keys and the grid is {hw[0]}x{hw[1]} (+{extra} extra tokens); '
                f'use variant="random" for this layer')
        return hw, extra

    def forward(self,
                q: torch.Tensor,
                k: torch.Tensor,
                v: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None,
                dropout_p: float = 0.0,
                scale: Optional[float] = None,
                grid_hw: Optional[Tuple[int, int]] = None,
                num_extra_tokens: Optional[int] = None) -> torch.Tensor:
        if not self.active:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  dropout_p=dropout_p, scale=scale)
        hw, extra = self._resolve_grid(k.shape[-2], grid_hw, num_extra_tokens)
        return dropkey_attention(q, k, v, self.ratio, self.variant, attn_mask=attn_mask,
                                 dropout_p=dropout_p, scale=scale, grid_hw=hw,
                                 num_extra_tokens=extra, block_size=self.block_size,
                                 chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        s = f'ratio={self.ratio:.4g}, variant={self.variant}'
        if self.variant != 'random':
            s += f', block_size={self.block_size}'
        if not self.enabled:
            s += ', enabled=False'
        return s


def dropkey_modules(model: nn.Module) -> List[DropKey]:
    """All :class:`DropKey` modules of ``model`` (unwraps DDP-style ``.module`` wrappers)."""
    model = getattr(model, 'module', model) if not isinstance(model, DropKey) else model
    return [m for m in model.modules() if isinstance(m, DropKey)]


def set_dropkey_enabled(model: nn.Module, enabled: bool) -> int:
    """Switch every DropKey of ``model`` on/off (e.g. for a final phase); returns their count."""
    mods = dropkey_modules(model)
    for m in mods:
        m.enabled = bool(enabled)
    return len(mods)


def set_dropkey_sampling(model: nn.Module, sampling: bool) -> int:
    """Force DropKey active outside training (Monte-Carlo test-time sampling); returns count."""
    mods = dropkey_modules(model)
    for m in mods:
        m.sampling = bool(sampling)
    return len(mods)


# ------------------------------------------------------------------------------------------------
# attaching DropKey to host models (the `dropkey` key of `Regularized`)
# ------------------------------------------------------------------------------------------------
class DropKeyAttentionMixin:
    """Mixed into a host attention class: while its ``dropkey`` child is active, the forward runs
    through the host's attention adapter with DropKey as the core; otherwise it is the host's own
    forward, unchanged (eval outputs are bit-identical to the unregularised module)."""

    _keeps_attention_semantics = True

    def forward(self, *args, **kwargs):
        dropkey = self.dropkey
        if not dropkey.active:
            return super().forward(*args, **kwargs)
        return self._attention_adapter.forward(self, *args, attention_fn=dropkey, **kwargs)


class GridRecorder:
    """Forward hook remembering the latest token grid ``hw`` for block/cross DropKey.

    Hooked on ``patch_embed`` modules (output ``(x, (H, W))``) and on ``positional_encoding``
    modules (mmdet DETR; output ``(B, C, H, W)``)."""

    def __init__(self):
        self.hw = None

    def __call__(self, module, inputs, output):
        if isinstance(output, (tuple, list)) and len(output) == 2 and \
                isinstance(output[1], (tuple, list)) and len(output[1]) == 2:
            self.hw = (int(output[1][0]), int(output[1][1]))
        elif torch.is_tensor(output) and output.dim() == 4:
            self.hw = (int(output.shape[-2]), int(output.shape[-1]))


class DropKeyMCMixin:
    """Monte-Carlo test-time averaging for mmpretrain classifiers: ``predict`` averages the
    softmax scores of ``dropkey_mc_samples`` stochastic passes with DropKey sampling."""

    def predict(self, inputs, data_samples=None, **kwargs):
        n = int(getattr(self, 'dropkey_mc_samples', 1))
        if n <= 1 or self.training:
            return super().predict(inputs, data_samples, **kwargs)
        set_dropkey_sampling(self, True)
        try:
            probs = None
            for _ in range(n):
                p = F.softmax(self.head(self.extract_feat(inputs)).float(), dim=1)
                probs = p if probs is None else probs + p
        finally:
            set_dropkey_sampling(self, False)
        probs = probs / n
        # the head's post-processing applies softmax: log of a distribution is a fixed point
        return self.head._get_predictions(probs.clamp_min(1e-30).log(), data_samples)


_DROPKEY_KEYS = {'ratio', 'schedule', 'min_ratio', 'variant', 'block_size', 'targets',
                 'mc_samples', 'chunk_size', 'grid_hw', 'num_extra_tokens'}
_TARGET_KEYS = {'name', 'ratio', 'schedule', 'min_ratio', 'variant', 'block_size', 'chunk_size',
                'grid_hw', 'num_extra_tokens'}


def attach_dropkey(module: nn.Module, dropkey: DropKey) -> nn.Module:
    """Give one supported attention module a DropKey core (class switch + ``dropkey`` child)."""
    from mmvitreg.models.regularized import extend_class
    from mmvitreg.models.utils.attention_adapters import get_attention_adapter
    adapter = get_attention_adapter(module)
    if adapter is None:
        raise ValueError(f'DropKey does not support attention module {type(module).__name__}')
    module.add_module('dropkey', dropkey)
    module._attention_adapter = adapter
    return extend_class(module, DropKeyAttentionMixin)


def apply_dropkey(model: nn.Module, cfg: dict) -> nn.Module:
    """Attach DropKey to the attention layers of ``model`` in place (``Regularized`` key).

    Config keys: ``ratio`` (0.1), ``schedule`` ('decrease'), ``min_ratio`` (0.0), ``variant``
    ('random'), ``block_size`` (3), ``chunk_size``, ``grid_hw``, ``num_extra_tokens``,
    ``mc_samples`` (1; > 1 needs an mmpretrain classifier host) and ``targets``: a list of module
    path patterns (see :func:`~mmvitreg.models.utils.attention_adapters.match_target`), or
    dicts ``dict(name=pattern, ratio=..., schedule=..., variant=...)`` overriding keys per group.
    Default: one group with every supported attention. The schedule's layer index is the order
    of the matched attention modules within each group (definition order = depth order). A
    module already claimed by an earlier group is skipped in later ones.
    """
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - _DROPKEY_KEYS)
    if unknown:
        raise KeyError(f'unknown dropkey option(s) {unknown}; allowed: {sorted(_DROPKEY_KEYS)}')
    mc_samples = cfg.pop('mc_samples', 1)
    targets = cfg.pop('targets', None) or ['']
    if isinstance(targets, (str, dict)):
        targets = [targets]
    defaults = dict(ratio=0.1, schedule='decrease', min_ratio=0.0, variant='random',
                    block_size=3, chunk_size=None, grid_hw=None, num_extra_tokens=None)
    defaults.update(cfg)
    from mmvitreg.models.utils.attention_adapters import find_attention_modules
    claimed = set()
    attached: List[DropKey] = []
    for target in targets:
        group = dict(defaults)
        if isinstance(target, dict):
            bad = sorted(set(target) - _TARGET_KEYS)
            if bad:
                raise KeyError(f'unknown dropkey target option(s) {bad}; allowed: '
                               f'{sorted(_TARGET_KEYS)}')
            group.update(target)
            pattern = group.pop('name', '') or ''
        elif isinstance(target, str):
            pattern = target
        else:
            raise ValueError(f'DropKey targets must be strings or dicts, got {target!r}')
        mods = [(n, m) for n, m in find_attention_modules(model, pattern) if id(m) not in claimed]
        if not mods:
            raise ValueError(f'DropKey target {pattern!r} matched no supported attention module '
                             f'in {type(model).__name__}')
        ratios = dropkey_ratios(len(mods), group['ratio'], group['schedule'], group['min_ratio'])
        for (name, mod), r in zip(mods, ratios):
            dk = DropKey(r, group['variant'], group['block_size'], grid_hw=group['grid_hw'],
                         num_extra_tokens=group['num_extra_tokens'],
                         chunk_size=group['chunk_size'])
            attach_dropkey(mod, dk)
            claimed.add(id(mod))
            attached.append(dk)
    if any(dk.variant != 'random' and dk.grid_hw is None for dk in attached):
        recorder = GridRecorder()
        for name, mod in model.named_modules():
            last = name.rsplit('.', 1)[-1]
            if last in ('patch_embed', 'positional_encoding'):
                mod.register_forward_hook(recorder)
        for dk in attached:
            dk.grid_source = recorder
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f'DropKey mc_samples must be an integer >= 1, got {mc_samples!r}')
    if mc_samples > 1:
        head = getattr(model, 'head', None)
        if not (hasattr(model, 'extract_feat') and hasattr(head, '_get_predictions')):
            raise ValueError(
                f'DropKey mc_samples={mc_samples} needs an mmpretrain classifier host (e.g. '
                f"host='ImageClassifier'), got {type(model).__name__}")
        from mmvitreg.models.regularized import extend_class
        extend_class(model, DropKeyMCMixin)
        model.dropkey_mc_samples = mc_samples
    return model


def _register():
    from mmvitreg.models.regularized import REGULARIZERS, register_regularizer
    if 'dropkey' not in REGULARIZERS:
        register_regularizer('dropkey', order=50)(apply_dropkey)


_register()
