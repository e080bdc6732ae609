"""Fused DropKey with FlexAttention: the mask is applied inside the attention kernel.

Two ways to give the kernel the mask, the same bits as :mod:`.random` either way:

* in-kernel hash (default): the ``score_mod`` computes, for logit ``(b, h, q, k)``, the
  SplitMix64 lane of :mod:`.random` (row ``(b * H + h) * Nq + q``, word ``row * ceil(Nk / 4) +
  k // 4``, lane ``k % 4``); no tensor of the mask's size exists; a boolean host mask is read
  in the same ``score_mod``.
* packed bits (``mask_source='bits'``): one compiled pass writes the dropped bits, 8 keys per
  byte (:mod:`.packed`; the host's boolean mask folded in), and the ``score_mod`` reads one bit
  per logit. Measured on an H200 (``benchmarks/gpu_acceptance.py``, README) this was slower
  than hashing at N = 197 and 65 (the gathered byte loads cost more than the integer hash) and
  faster only at N = 4096 with a trainable bias, so it is not the default. Not on CPU, where
  inductor's flex template (forward only, never chosen by ``backend='auto'``) fails to compile
  the bit reads.

A float host mask (additive bias, e.g. a relative-position bias, trainable or not) is added to
the score in the same ``score_mod``; FlexAttention returns its gradient (torch >= 2.6). The
call key, threshold and sizes are passed in a small int64 tensor, so a new call, ratio or token
count does not recompile (the compiled function is shared; shapes become dynamic after the first
change). Attention dropout is not available in FlexAttention (it has no post-softmax hook):
calls with ``dropout_p > 0`` take the SDPA path.

All-dropped rows: FlexAttention returns a zero row with ``lse = -inf`` there; when such a row
is possible with a probability above 1e-9 per call (small ``Nk``, high ``p``, or a host mask) they
are found from the ``lse`` (on CPU, where inductor's kernel returns no ``lse``, from the mask)
and recomputed as plain attention with the host's mask (one device sync). Otherwise the
check is skipped: the only difference to the SDPA path is then a zero row with probability
``< 1e-9`` per call. FlexAttention's backward needs CUDA (on CPU torch runs it forward only).
"""
import logging
from typing import Optional

import torch

from .masks import empty_rows_possible, split_host_mask
from .packed import bit_is_set, packed_drop_bits
from .random import words_per_row
from .schedule import ratio_threshold
from .splitmix import GOLDEN, lane_below, mix64_tensor, signed

__all__ = ['flex_available', 'flex_applies', 'flex_dropkey_attention', 'flex_failure']

_STATE = {'compiled': None, 'available': None, 'failed': None}
_LOG = logging.getLogger(__name__)


def flex_available() -> bool:
    """True if this torch has FlexAttention (``torch.nn.attention.flex_attention``)."""
    if _STATE['available'] is None:
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
            _STATE['available'] = True
        except ImportError:  # pragma: no cover - torch < 2.5
            _STATE['available'] = False
    return _STATE['available']


def _kernel_head_dim(d: int) -> bool:
    """A head dim every FlexAttention release compiles: a power of two >= 16."""
    return d >= 16 and d & (d - 1) == 0


def flex_applies(q: torch.Tensor, variant: str, dropout_p: float,
                 attn_mask: Optional[torch.Tensor], v: Optional[torch.Tensor] = None,
                 device_type: Optional[str] = None) -> bool:
    """Whether ``backend='auto'`` takes the fused path: CUDA (``device_type``, default q's),
    random variant, no attention dropout, a boolean or float (bias) host mask or none, the q/k
    and the v head dims (they may differ) powers of two >= 16, FlexAttention available."""
    return ((device_type or q.device.type) == 'cuda' and variant == 'random' and dropout_p == 0
            and (attn_mask is None or attn_mask.dtype == torch.bool
                 or attn_mask.is_floating_point())
            and _kernel_head_dim(q.shape[-1])
            and (v is None or _kernel_head_dim(v.shape[-1])) and flex_available()
            and _STATE['failed'] is None)


def flex_failure() -> Optional[str]:
    """Why ``backend='auto'`` stopped using FlexAttention in this process (None: it did not)."""
    return _STATE['failed']


def _disable(reason: str) -> None:
    _STATE['failed'] = reason
    _LOG.warning('DropKey: FlexAttention is off for this process (%s); backend="auto" uses the '
                 'SDPA path (same masks, slower)', reason)


def _compiled_flex():
    if _STATE['compiled'] is None:
        from torch.nn.attention.flex_attention import flex_attention
        _STATE['compiled'] = torch.compile(flex_attention)
    return _STATE['compiled']


def _read(t: torch.Tensor, b, h, q_idx, kv_idx):
    """Element ``(b, h, q_idx, kv_idx)`` of a 4-D tensor broadcastable to the logits (index 0
    on its broadcast dims), inside a ``score_mod``."""
    idx = tuple(i if n > 1 else 0 for i, n in zip((b, h, q_idx, kv_idx), t.shape))
    return t[idx]


def _score_mod(params: torch.Tensor, bits: Optional[torch.Tensor],
               allowed: Optional[torch.Tensor], bias: Optional[torch.Tensor]):
    """``score + bias``, ``-inf`` where dropped: read from the packed ``bits`` (host mask folded
    in), or hashed here (then the bool host mask ``allowed`` is read too)."""
    golden = signed(GOLDEN)

    def dropped(b, h, q_idx, kv_idx):
        if bits is not None:
            return bit_is_set(bits, b, h, q_idx, kv_idx)
        heads, nq, words, offset, thr = params[0], params[1], params[2], params[3], params[4]
        kv = kv_idx.to(torch.int64)
        row = (b.to(torch.int64) * heads + h.to(torch.int64)) * nq + q_idx.to(torch.int64)
        x = mix64_tensor((row * words + kv // 4) * golden + offset)
        drop = lane_below(x, (kv % 4) * 16, thr)  # the rule of the CPU masks
        if allowed is not None:
            drop = drop | ~_read(allowed, b, h, q_idx, kv_idx)
        return drop

    def score_mod(score, b, h, q_idx, kv_idx):
        if bias is not None:
            score = score + _read(bias, b, h, q_idx, kv_idx)
        return torch.where(dropped(b, h, q_idx, kv_idx), float('-inf'), score)

    return score_mod


def flex_dropkey_attention(q: torch.Tensor,
                           k: torch.Tensor,
                           v: torch.Tensor,
                           ratio: float,
                           key: int,
                           *,
                           attn_mask: Optional[torch.Tensor] = None,
                           scale: Optional[float] = None,
                           strict: bool = True,
                           mask_source: Optional[str] = None) -> Optional[torch.Tensor]:
    """Random-variant DropKey attention in one FlexAttention call (same mask as the SDPA path).

    ``attn_mask``: the host's boolean mask (True = may attend) or float bias (added to the
    logits; may require grad). ``mask_source``: ``'hash'`` (None, the default) or ``'bits'``
    (see the module).
    ``strict=False`` (``backend='auto'``): a failure of the compile machinery (``torch.compile``
    raising, or the compiled kernel raising other than out of memory) returns None after one
    warning and turns FlexAttention off for the process; ``strict=True`` raises it."""
    if not flex_available():
        raise ValueError('DropKey backend="flex" needs torch >= 2.5 (FlexAttention); use '
                         'backend="sdpa" or "auto"')
    if mask_source not in (None, 'bits', 'hash'):
        raise ValueError(f"mask_source must be None, 'bits' or 'hash', got {mask_source!r}")
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    b, h, nq, _ = q.shape
    nk = k.shape[-2]
    k = k.expand(b, h, nk, k.shape[-1])
    v = v.expand(b, h, nk, v.shape[-1])
    allowed, bias = split_host_mask(attn_mask)
    mask_source = mask_source or 'hash'
    bits = None
    if mask_source == 'bits':
        bits = packed_drop_bits(key, (b, h, nq, nk), ratio, q.device, allowed)
    params = torch.tensor([h, nq, words_per_row(nk), signed(key + GOLDEN),
                           ratio_threshold(ratio)], dtype=torch.int64, device=q.device)
    score_mod = _score_mod(params, bits, allowed, bias)
    need_check = empty_rows_possible(attn_mask, ratio, nk, b * h * nq)
    try:
        with torch.autocast(device_type, enabled=False):
            if device_type == 'cpu':  # inductor's CPU flex kernel: inference only, no lse
                out = _compiled_flex()(q, k, v, score_mod=score_mod, scale=scale)
            else:
                out, lse = _compiled_flex()(q, k, v, score_mod=score_mod, scale=scale,
                                            return_lse=True)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:
        if strict:
            raise
        from .compiled import failure_reason
        _disable(failure_reason(err))
        return None
    if not need_check:
        return out
    host_allowed = allowed if bias is None else bias > float('-inf')
    if device_type == 'cpu':
        from .masks import keep_for_rows, query_rows
        keep = keep_for_rows(key, query_rows(b * h, nq, 0, nq, q.device), nk, ratio)
        keep = keep.view(b, h, nq, nk)
        bad = ~(keep if host_allowed is None else keep & host_allowed).any(-1)
    else:
        bad = ~torch.isfinite(lse)
    if not bool(bad.any()):
        return out
    return _repair_rows(out, bad, q, k, v, scale, host_allowed, bias)


def _repair_rows(out, bad, q, k, v, scale, allowed, bias):
    """``out`` with the rows ``bad`` recomputed as plain attention with the host's mask."""
    idx = bad.nonzero(as_tuple=True)
    qi, ki, vi = q[idx[0], idx[1], idx[2]], k[idx[0], idx[1]], v[idx[0], idx[1]]
    logits = torch.einsum('nd,nkd->nk', qi.float(), ki.float()) * (
        q.shape[-1]**-0.5 if scale is None else scale)
    if bias is not None:
        logits = logits + bias.expand(out.shape[:3] + (k.shape[-2], ))[idx].float()
    elif allowed is not None:
        logits = logits.masked_fill(~allowed.expand(out.shape[:3] + (k.shape[-2], ))[idx],
                                    float('-inf'))
    fix = torch.einsum('nk,nkd->nd', logits.softmax(-1), vi.float()).to(out.dtype)
    return out.index_put(idx, fix)
