"""DropKey flash attention in Triton, with attention dropout and a (trainable) float bias.

What the shipped DETR / QPIC (key padding, attention dropout 0.1) and PlainViT (trainable
relative-position bias) configs need on a GPU and FlexAttention cannot give: it has no hook after
the softmax, so with dropout those calls took the SDPA path with a materialised mask. Here every
drop decision is computed per tile inside the kernel, in registers:

* DropKey: logit ``(b, h, q, k)`` is dropped iff lane ``k % 4`` of SplitMix64 output
  ``row * ceil(Nk / 4) + k // 4`` (``row = (b * H + h) * Nq + q``) of the call key's stream,
  read in offset binary, is below ``round(p * 65536)`` -- the bits of :mod:`.random`, so the same
  key drops the same logits as on every other path.
* attention dropout (after the softmax, kept probabilities scaled by ``1 / (1 - p)``): the same
  rule on the stream of :func:`dropout_key` (derived from the call key). Counter-based like the
  DropKey mask, so a resumed run or a recomputed (checkpointed) forward drops the same
  probabilities. Deliberate difference to the SDPA path, whose dropout comes from the global RNG
  as the host's: the dropped probabilities differ (same distribution).
* key padding (boolean host mask, True = may attend) and an additive float bias (broadcastable to
  ``(B, H, Nq, Nk)``; its gradient is returned when it requires one).

FlashAttention-2's schedule: the forward keeps a running max and sum per query row and saves the
log-sum-exp; the backward recomputes the logits tile by tile, one program per key block for dK/dV
and one per query block for dQ (and the bias gradient), so no atomics and deterministic results.

A query row whose every allowed key DropKey dropped is, as on the other paths, attended without
DropKey: where such a row can occur with a probability above 1e-9 the forward finds those rows
from the log-sum-exp and runs again with DropKey off for them (a per-row flag the backward reads).

``backend='auto'`` takes this path on CUDA, for calls with attention dropout or a trainable
bias. In a process started with ``TRITON_INTERPRET=1`` the kernels run on CPU tensors in
Triton's interpreter (numpy, slow; the tests; it mis-computes bf16). The kernels themselves
are in :mod:`.triton_kernels`; both modules import without Triton.
"""
import logging
from typing import NamedTuple, Optional

import torch

from . import triton_kernels
from .masks import empty_rows_possible, keep_for_rows, query_rows, split_host_mask
from .schedule import ratio_threshold
from .splitmix import GOLDEN, MASK64, mix64, signed

__all__ = ['triton_available', 'triton_applies', 'triton_failure', 'triton_dropkey_attention',
           'dropout_key', 'reference_attention', 'TritonConfig', 'default_config', 'make_config',
           'cuda_arch']

_LOG = logging.getLogger(__name__)
_STATE = {'failed': None, 'verified': set()}
#: the dropout stream's key is the call key's, xor-ed with this, through the finaliser
DROPOUT_SALT = 0xD409_0C7A_11E5_5A17
#: the largest head dim the kernels are built for (tiles hold whole rows of q, k, v)
MAX_HEAD_DIM = 256
#: the largest head dim ``backend='auto'`` gives the kernels in fp32: beyond it every tile
#: that fits an SM spills kilobytes of registers per thread (tools/analysis_tools/
#: dropkey_triton_build.py), so the SDPA path is taken (``backend='triton'`` still runs them)
FP32_AUTO_HEAD_DIM = 128


def triton_available() -> bool:
    """True if Triton imports (it ships with torch's CUDA builds)."""
    return triton_kernels.tl is not None


def triton_failure() -> Optional[str]:
    """Why ``backend='auto'`` stopped using the Triton kernel in this process (None: it did not)."""
    return _STATE['failed']


def triton_applies(q: torch.Tensor, variant: str, attn_mask: Optional[torch.Tensor],
                   v: Optional[torch.Tensor] = None, device_type: Optional[str] = None) -> bool:
    """Whether ``backend='auto'`` gives the call to the Triton kernel: CUDA (``device_type``,
    default q's), random variant, no host mask or a boolean / float one, head dims <=
    :data:`MAX_HEAD_DIM` (q/k and v may differ) and <= :data:`FP32_AUTO_HEAD_DIM` where it
    computes in fp32, Triton importable and not turned off by a failure in this process."""
    device_type = device_type or q.device.type
    head_dim = max(q.shape[-1], q.shape[-1] if v is None else v.shape[-1])
    dtype = q.dtype
    if device_type == 'cuda' and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    return (device_type == 'cuda' and variant == 'random'
            and (attn_mask is None or attn_mask.dtype == torch.bool
                 or attn_mask.is_floating_point())
            and head_dim <= (FP32_AUTO_HEAD_DIM if dtype == torch.float32 else MAX_HEAD_DIM)
            and triton_available() and _STATE['failed'] is None)


def dropout_key(key: int) -> int:
    """The key of a call's attention-dropout stream (signed int64), independent of its DropKey
    stream."""
    return signed(mix64((key & MASK64) ^ DROPOUT_SALT))


# ------------------------------------------------------------------------------------------------
# launching
# ------------------------------------------------------------------------------------------------
class TritonConfig(NamedTuple):
    """How the kernels run. Each program holds ``block_held`` rows -- queries in the forward and
    the dQ kernel, keys in the dK/dV kernel -- and streams over the other side
    ``block_streamed`` at a time (FlashAttention-2's schedule; powers of 2 from 16, ``tl.dot``'s
    smallest, to 256); ``num_warps`` and ``num_stages`` (software pipelining) per program; and
    how fp32 inputs are multiplied: ``'tf32x3'`` (three TF32 tensor-core products, about fp32's
    precision: what the host's fp32 SDPA kernel does from Ampere on, CUTLASS's
    ``OpMultiplyAddFastF32``) or ``'ieee'`` (fp32 on CUDA cores). The drop bits depend on none
    of it (they are a function of the logit's position); Triton's interpreter uses the tiles
    only."""
    block_held: int
    block_streamed: int
    num_warps: int = 4
    num_stages: int = 2
    fp32_dots: str = 'tf32x3'


def cuda_arch(device=None) -> int:
    """The compute capability of a CUDA device as one number (9.0 -> 90), as
    :func:`default_config` takes it."""
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def default_config(arch: Optional[int], dtype: torch.dtype, head_dim: int, value_dim: int,
                   dropout: bool) -> TritonConfig:
    """The tiles for a call on CUDA compute capability ``arch`` (e.g. 90: H100/H200, 100: B200,
    80: A100; None: Triton's interpreter, 16 x 16 so that the tests exercise several tiles at
    small N).

    The largest tiles for which ptxas (Triton 3.7) allocates every kernel's registers without
    spilling, found with ``tools/analysis_tools/dropkey_triton_build.py`` at the shipped
    configs' calls -- chosen from register and shared-memory use, not yet timed on a GPU
    (``benchmarks/gpu_acceptance.py --tile-sweep`` times the alternatives). Held x streamed
    rows (see :class:`TritonConfig`), 4 warps, 2 stages:

    ================================  ========  ==============  ==============
    call                              sm_90     sm_100 and up   sm_80 .. sm_89
    ================================  ========  ==============  ==============
    fp16/bf16, no attention dropout   64 x 64   64 x 64         32 x 32
    fp16/bf16, attention dropout      64 x 32   64 x 32         64 x 32
    fp32 (three TF32 products)        64 x 16   32 x 16         32 x 16
    ================================  ========  ==============  ==============

    Head dims over 128: 32 x 16 in fp16/bf16 (no spill either), 16 x 16 in fp32 (spills
    kilobytes, which is why ``backend='auto'`` does not give such calls to the kernels)."""
    if arch is None:
        return TritonConfig(16, 16)
    sm90_up = arch >= 90
    if max(head_dim, value_dim) > 128:
        return TritonConfig(16, 16) if dtype == torch.float32 else TritonConfig(32, 16)
    if dtype == torch.float32:
        return TritonConfig(64, 16) if arch // 10 == 9 else TritonConfig(32, 16)
    if dropout:
        return TritonConfig(64, 32)
    return TritonConfig(64, 64) if sm90_up else TritonConfig(32, 32)


def make_config(given) -> TritonConfig:
    """``given`` (a :class:`TritonConfig` or a tuple of its fields) checked: ValueError in one
    line for tiles, warps, stages or products the kernels do not take."""
    try:
        config = TritonConfig(*given)
        ints = [int(b) for b in config[:4]]
    except (TypeError, ValueError):
        config = None
    if config is None or not (
            all(16 <= b <= 256 and b & (b - 1) == 0 for b in ints[:2])
            and ints[2] in (1, 2, 4, 8, 16) and ints[3] >= 1
            and config.fp32_dots in ('tf32x3', 'ieee')):
        raise ValueError(f'config must be (block_held, block_streamed, num_warps, num_stages, '
                         f'fp32_dots) with blocks powers of 2 in [16, 256], warps a power of 2 '
                         f"up to 16, stages >= 1 and fp32_dots 'tf32x3' or 'ieee', got {given!r}")
    return TritonConfig(*ints, config.fp32_dots)


class _Call:
    """The scalars and host masks of one call, as the kernels take them."""

    def __init__(self, q, k, v, ratio, key, bias, allowed, dropout_p, scale, per_word, config,
                 arch, kernels):
        b, h, nq, d = q.shape
        self.shape = (b, h, nq, k.shape[-2])
        self.dims = (d, v.shape[-1])
        self.kernels = kernels
        config = config or default_config(arch, q.dtype, *self.dims, dropout_p > 0)
        dims = dict(BLOCK_D=max(16, 1 << (d - 1).bit_length()),
                    BLOCK_DV=max(16, 1 << (v.shape[-1] - 1).bit_length()))
        # forward and dQ: queries held (BLOCK_M), keys streamed (BLOCK_N); dK/dV: the reverse
        self.blocks = dict(BLOCK_M=config.block_held, BLOCK_N=config.block_streamed, **dims)
        self.kv_blocks = dict(BLOCK_M=config.block_streamed, BLOCK_N=config.block_held, **dims)
        # warps and stages mean nothing to the interpreter, which refuses them
        self.launch = dict(num_warps=config.num_warps, num_stages=config.num_stages) \
            if arch is not None else {}
        self.scale = d**-0.5 if scale is None else float(scale)
        self.drop = (signed(key + GOLDEN), ratio_threshold(ratio))
        self.dropout_p = float(dropout_p)
        if dropout_p > 0:
            self.dropout = (signed(dropout_key(key) + GOLDEN), ratio_threshold(dropout_p),
                            1.0 / (1.0 - dropout_p))
        else:
            self.dropout = (0, 0, 1.0)
        self.bias = bias
        self.allowed = allowed
        # fp16/bf16: Triton's default (tensor cores); fp32: the config's
        self.precision = config.fp32_dots if q.dtype == torch.float32 else None
        self.per_word = per_word

    def masks(self, q):
        """``([bias, allowed], their 8 strides)`` as the kernels take them: the boolean mask as
        bytes, ``q`` with strides 0 as a dummy where a mask is absent."""
        tensors, strides = [], []
        for t in (self.bias, self.allowed):
            if t is None:
                tensors.append(q)
                strides += [0, 0, 0, 0]
            else:
                t = t.expand(self.shape)
                tensors.append(t.view(torch.uint8) if t.dtype == torch.bool else t)
                strides += t.stride()
        return tensors, strides

    def scalars(self):
        b, h, nq, nk = self.shape
        return [h, nq, nk, self.dims[0], self.dims[1], self.scale, *self.drop, *self.dropout]

    def flags(self, has_flags):
        return dict(HAS_BIAS=self.bias is not None, HAS_ALLOWED=self.allowed is not None,
                    HAS_FLAGS=has_flags, HAS_DROPOUT=self.dropout_p > 0,
                    PRECISION=self.precision, PER_WORD=self.per_word)


def _forward(q, k, v, call: _Call, row_flags: Optional[torch.Tensor]):
    b, h, nq, nk = call.shape
    out = q.new_empty(b, h, nq, call.dims[1])
    lse = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    grid = (_cdiv(nq, call.blocks['BLOCK_M']), b * h)
    masks, mask_strides = call.masks(q)
    call.kernels['forward'][grid](
        q, k, v, out, lse, q if row_flags is None else row_flags, *masks,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *mask_strides, *call.scalars(),
        **call.flags(row_flags is not None), **call.blocks, **call.launch)
    return out, lse


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _TritonDropKeyAttention(torch.autograd.Function):
    """Forward and backward of :func:`triton_dropkey_attention` (q, k, v, bias at full
    ``(B, H, ...)`` shapes; the bias's gradient at ``(B, H, Nq, Nk)``)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, call: _Call, need_check: bool):
        out, lse = _forward(q, k, v, call, None)
        row_flags = None
        if need_check:
            bad = ~torch.isfinite(lse)
            if bool(bad.any()):
                row_flags = bad.to(torch.int8)
                out, lse = _forward(q, k, v, call, row_flags)
        ctx.save_for_backward(q, k, v, bias, out, lse, row_flags)
        ctx.call = call
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse, row_flags = ctx.saved_tensors
        call = ctx.call
        b, h, nq, nk = call.shape
        d, dv = call.dims
        grad_out = grad_out.contiguous()
        delta = (grad_out.float() * out.float()).sum(-1)
        dq = torch.empty(b, h, nq, d, dtype=q.dtype, device=q.device)
        dk = torch.empty(b, h, nk, d, dtype=k.dtype, device=q.device)
        dv_ = torch.empty(b, h, nk, dv, dtype=v.dtype, device=q.device)
        need_bias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.empty(b, h, nq, nk, dtype=torch.float32, device=q.device) \
            if need_bias else None
        masks, mask_strides = call.masks(q)
        flags = q if row_flags is None else row_flags
        common = [*q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *mask_strides,
                  *call.scalars()]
        kernels = call.kernels
        opts = dict(**call.flags(row_flags is not None), **call.launch)
        kernels['backward_kv'][(_cdiv(nk, call.kv_blocks['BLOCK_N']), b * h)](
            q, k, v, grad_out, lse, delta, flags, *masks, dk, dv_, *common, **call.kv_blocks,
            **opts)
        kernels['backward_q'][(_cdiv(nq, call.blocks['BLOCK_M']), b * h)](
            q, k, v, grad_out, lse, delta, flags, *masks, dq,
            q if dbias is None else dbias, *common, HAS_DBIAS=need_bias, **call.blocks, **opts)
        if dbias is not None:  # summed over the bias's broadcast dims, in its dtype
            dbias = dbias.sum_to_size(bias.shape).to(bias.dtype)
        return dq, dk, dv_, dbias, None, None


def triton_dropkey_attention(q: torch.Tensor,
                             k: torch.Tensor,
                             v: torch.Tensor,
                             ratio: float,
                             key: int,
                             *,
                             attn_mask: Optional[torch.Tensor] = None,
                             dropout_p: float = 0.0,
                             scale: Optional[float] = None,
                             strict: bool = True,
                             lanes: str = 'word',
                             config: Optional[TritonConfig] = None) -> Optional[torch.Tensor]:
    """Random-variant DropKey attention (plus attention dropout) in the Triton kernels.

    ``q, k, v``: ``(B, H, Nq, d)``, ``(B, H, Nk, d)``, ``(B, H, Nk, dv)`` (k and v broadcastable
    over the leading dims); ``attn_mask``: the host's boolean mask (True = may attend) or float
    bias, broadcastable to ``(B, H, Nq, Nk)``. Mixed q/k/v dtypes are cast to q's.
    ``strict=False`` (``backend='auto'``): a failure of the kernels' compilation or launch,
    or a first-use check on this device that disagrees with :func:`reference_attention`, returns
    None after one warning and turns the path off for the process; ``strict=True`` raises.
    ``lanes``: ``'word'`` (default: one SplitMix64 word hashed per 4 keys, its 16-bit lanes
    spread over them) or ``'logit'`` (one hash per logit, 4x the integer work, no shuffling of
    lanes between columns); the same bits either way (a diagnostic for the GPU benchmark).
    ``config``: a :class:`TritonConfig` (tiles, warps, stages, fp32 products) instead of
    :func:`default_config` (the same bits; for tuning).
    """
    if not triton_available():
        raise ValueError('DropKey backend="triton" needs Triton (shipped with torch\'s CUDA '
                         'builds); use backend="sdpa" or "auto"')
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f'DropKey backend="triton" takes head dims up to {MAX_HEAD_DIM}, got '
                         f'{q.shape[-1]} and {v.shape[-1]}')
    if lanes not in ('word', 'logit'):
        raise ValueError(f"lanes must be 'word' or 'logit', got {lanes!r}")
    config = None if config is None else make_config(config)
    if not strict and _STATE['failed'] is not None:  # off after a failure (warned once)
        return None
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    k, v = k.to(q.dtype), v.to(q.dtype)
    try:
        if not strict:
            _verify(q.device, q.dtype)
        return _attention(q, k, v, ratio, key, attn_mask=attn_mask, dropout_p=dropout_p,
                          scale=scale, lanes=lanes, config=config)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:
        if strict:
            raise
        from .compiled import failure_reason
        _disable(failure_reason(err))
        return None


def _attention(q, k, v, ratio, key, *, attn_mask=None, dropout_p=0.0, scale=None,
               lanes='word', config=None, arch=None, kernels=None):
    """The call through the kernels. ``arch``: the compute capability launched for (default
    q's GPU; CPU tensors: Triton's interpreter), which picks the default config and the launch
    options; ``kernels`` (default :func:`.triton_kernels.kernels`): what is launched.
    :mod:`.triton_aot` compiles a call for a GPU the machine does not have with these two."""
    if arch is None and q.is_cuda:
        arch = cuda_arch(q.device)
    b, h, nq, _ = q.shape
    nk = k.shape[-2]
    k_full = k.expand(b, h, nk, k.shape[-1])
    v_full = v.expand(b, h, nk, v.shape[-1])
    allowed, bias = split_host_mask(attn_mask)
    call = _Call(q, k_full, v_full, ratio, key, bias, allowed, dropout_p, scale,
                 per_word=lanes == 'word', config=config,
                 arch=arch, kernels=kernels or triton_kernels.kernels())
    need_check = empty_rows_possible(attn_mask, ratio, nk, b * h * nq)
    with torch.autocast(q.device.type, enabled=False):
        out = _TritonDropKeyAttention.apply(q, k_full, v_full, bias, call, need_check)
    return out


def _disable(reason: str) -> None:
    _STATE['failed'] = reason
    _LOG.warning('DropKey: the Triton kernel is off for this process (%s); backend="auto" uses '
                 'the SDPA path (same DropKey masks, slower)', reason)


def reference_attention(q: torch.Tensor,
                        k: torch.Tensor,
                        v: torch.Tensor,
                        ratio: float,
                        key: int,
                        *,
                        attn_mask: Optional[torch.Tensor] = None,
                        dropout_p: float = 0.0,
                        scale: Optional[float] = None) -> torch.Tensor:
    """What the kernels compute, written out in torch (fp32 logits; for tests and the first-use
    check): the DropKey keep mask of :mod:`.masks`, rows left without a key attended with the
    host's mask only, softmax, then the dropout keep mask of :func:`dropout_key`'s stream."""
    b, h, nq, d = q.shape
    nk = k.shape[-2]
    scale = d**-0.5 if scale is None else scale
    logits = torch.einsum('bhqd,bhkd->bhqk', q.float(), k.float().expand(b, h, nk, d)) * scale
    allowed = torch.ones(b, h, nq, nk, dtype=torch.bool, device=q.device)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        allowed = allowed & attn_mask
    elif attn_mask is not None:
        logits = logits + attn_mask.float()
        allowed = allowed & (attn_mask > float('-inf'))
    rows = query_rows(b * h, nq, 0, nq, q.device)
    keep = keep_for_rows(key, rows, nk, ratio).view(b, h, nq, nk) & allowed
    keep = torch.where(keep.any(-1, keepdim=True), keep, allowed)
    probs = logits.masked_fill(~keep, float('-inf')).softmax(-1).nan_to_num(0.0)
    if dropout_p > 0:
        kept = keep_for_rows(dropout_key(key), rows, nk, dropout_p).view(b, h, nq, nk)
        probs = torch.where(kept, probs / (1.0 - dropout_p), 0.0)
    vf = v.float().expand(b, h, nk, v.shape[-1])
    return (probs @ vf).to(q.dtype)


def _verify(device: torch.device, dtype: torch.dtype) -> None:
    """Once per device and dtype: the kernels' output and gradients on a small call with every
    feature on (padding mask, bias, dropout, several tiles, v head dim != q's) agree with
    :func:`reference_attention`; raises otherwise (the caller turns the path off)."""
    tag = (str(device), dtype)
    if tag in _STATE['verified']:
        return
    # the caller may be under no_grad (validation) or autocast: the check needs neither
    with torch.enable_grad(), torch.autocast(device.type, enabled=False):
        _check_against_reference(device, dtype)
    _STATE['verified'].add(tag)


def _check_against_reference(device: torch.device, dtype: torch.dtype) -> None:
    """Two small calls, 70 x 90 logits (several tiles at the default tiles: 2 x 2 on CUDA, 5 x 6
    in the interpreter): a trainable bias, and key padding
    (DETR's boolean mask); DropKey 0.3 and dropout 0.25 in both; dv = 2 d."""
    gen = torch.Generator(device='cpu').manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    q, k, v = rand(2, 2, 70, 16), rand(2, 2, 90, 16), rand(2, 2, 90, 32)
    padding = torch.ones(2, 1, 1, 90, dtype=torch.bool, device=device)
    padding[1, ..., 70:] = False
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    for mask in (rand(1, 2, 70, 90), padding):
        inputs = (q, k, v) + ((mask, ) if mask.requires_grad else ())
        results = []
        for fn in (_attention, reference_attention):
            out = fn(q, k, v, 0.3, 1234, attn_mask=mask, dropout_p=0.25, scale=None)
            grads = torch.autograd.grad(out.float().square().sum(), inputs)
            results.append((out, *grads))
        for got, want in zip(*results):
            err = float((got.float() - want.float()).abs().max())
            largest = float(want.float().abs().max()) + 1e-6
            if not err <= tol * largest:
                raise RuntimeError(f'first-use check failed: kernel vs reference differ by '
                                   f'{err:.3g} (largest value {largest:.3g})')
