"""Fused DropKey with FlexAttention: the mask hash is evaluated inside the attention kernel.

The ``score_mod`` computes, for logit ``(b, h, q, k)``, the same SplitMix64 lane as
:mod:`.random` (row ``(b * H + h) * Nq + q``, word ``row * ceil(Nk / 4) + k // 4``, lane
``k % 4``) and sets dropped logits to ``-inf``; the call key, threshold and sizes are passed in a
small int64 tensor, so a new call, ratio or token count does not recompile (the compiled
function is shared; shapes become dynamic after the first change). A bool host mask (e.g. DETR's
key padding) is read inside the same ``score_mod``.

All-dropped rows: FlexAttention returns a zero row with ``lse = -inf`` there; when such a row
is possible with a probability above 1e-9 per call (small ``Nk``, high ``p``, or a host mask) they
are found from the ``lse`` (on CPU, where inductor's kernel returns no ``lse``, from the mask)
and recomputed as plain attention (one device sync). Otherwise the
check is skipped: the only difference to the SDPA path is then a zero row with probability
``< 1e-9`` per call. FlexAttention's backward needs CUDA (on CPU torch runs it forward only).
"""
import logging
from typing import Optional

import torch

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
                 attn_mask: Optional[torch.Tensor], v: Optional[torch.Tensor] = None) -> bool:
    """Whether ``backend='auto'`` takes the fused path: CUDA, random variant, no attention
    dropout, no float host mask, the q/k and the v head dims (they may differ) powers of two
    >= 16, FlexAttention available."""
    return (q.device.type == 'cuda' and variant == 'random' and dropout_p == 0
            and (attn_mask is None or attn_mask.dtype == torch.bool)
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


def _score_mod(params: torch.Tensor, allowed: Optional[torch.Tensor]):
    golden = signed(GOLDEN)

    def score_mod(score, b, h, q_idx, kv_idx):
        heads, nq, words, offset, thr = params[0], params[1], params[2], params[3], params[4]
        kv = kv_idx.to(torch.int64)
        row = (b.to(torch.int64) * heads + h.to(torch.int64)) * nq + q_idx.to(torch.int64)
        x = mix64_tensor((row * words + kv // 4) * golden + offset)
        drop = lane_below(x, (kv % 4) * 16, thr)  # the rule of the CPU masks
        if allowed is not None:
            drop = drop | ~allowed[b, h, q_idx, kv_idx]
        return torch.where(drop, float('-inf'), score)

    return score_mod


def flex_dropkey_attention(q: torch.Tensor,
                           k: torch.Tensor,
                           v: torch.Tensor,
                           ratio: float,
                           key: int,
                           *,
                           attn_mask: Optional[torch.Tensor] = None,
                           scale: Optional[float] = None,
                           strict: bool = True) -> Optional[torch.Tensor]:
    """Random-variant DropKey attention in one FlexAttention call (same mask as the SDPA path).

    ``strict=False`` (``backend='auto'``): a failure of the compile machinery (``torch.compile``
    raising, or the compiled kernel raising other than out of memory) returns None after one
    warning and turns FlexAttention off for the process; ``strict=True`` raises it."""
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError('DropKey backend="flex" supports bool host masks only, got an additive '
                         f'{attn_mask.dtype} mask; use backend="sdpa" or "auto"')
    if not flex_available():
        raise ValueError('DropKey backend="flex" needs torch >= 2.5 (FlexAttention); use '
                         'backend="sdpa" or "auto"')
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    b, h, nq, _ = q.shape
    nk = k.shape[-2]
    k = k.expand(b, h, nk, k.shape[-1])
    v = v.expand(b, h, nk, v.shape[-1])
    params = torch.tensor([h, nq, words_per_row(nk), signed(key + GOLDEN),
                           ratio_threshold(ratio)], dtype=torch.int64, device=q.device)
    allowed = None if attn_mask is None else attn_mask.expand(b, h, nq, nk)
    score_mod = _score_mod(params, allowed)
    need_check = attn_mask is not None or ratio**nk * b * h * nq > 1e-9
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
    if device_type == 'cpu':
        from .masks import keep_for_rows, query_rows
        keep = keep_for_rows(key, query_rows(b * h, nq, 0, nq, q.device), nk, ratio)
        keep = keep.view(b, h, nq, nk)
        bad = ~(keep if allowed is None else keep & allowed).any(-1)
    else:
        bad = ~torch.isfinite(lse)
    if not bool(bad.any()):
        return out
    idx = bad.nonzero(as_tuple=True)
    qi, ki, vi = q[idx[0], idx[1], idx[2]], k[idx[0], idx[1]], v[idx[0], idx[1]]
    logits = torch.einsum('nd,nkd->nk', qi.float(), ki.float()) * (
        q.shape[-1]**-0.5 if scale is None else scale)
    if allowed is not None:
        logits = logits.masked_fill(~allowed[idx], float('-inf'))
    fix = torch.einsum('nk,nkd->nd', logits.softmax(-1), vi.float()).to(out.dtype)
    return out.index_put(idx, fix)
