"""The Triton kernels of :mod:`.triton_flash`: DropKey flash attention forward and backward.

Plain functions here (the module imports without Triton: ``tl.constexpr`` annotations stay
strings); :func:`kernels` makes them Triton JIT functions at first use. The drop rule and the
bits are those of :mod:`.random` (SplitMix64, one 16-bit lane per logit); the schedule is
FlashAttention-2's (online softmax in the forward, the log-sum-exp saved; in the backward one
program per key block for dK/dV and one per query block for dQ and the bias gradient).
"""
from __future__ import annotations
import types

try:
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only torch builds; the kernels are never built
    tl = None

__all__ = ['kernels', 'build_kernels']

_BUILT: dict = {}


def _mix(key_offset, index):
    """SplitMix64 output number ``index`` of the stream with ``key_offset`` = key + golden gamma
    (int64 wrap-around; the right shifts made logical by masking off the sign bits)."""
    x = index * -7046029254386353131 + key_offset
    x = x ^ ((x >> 30) & 0x3FFFFFFFF)
    x = x * -4658895280553007687
    x = x ^ ((x >> 27) & 0x1FFFFFFFFF)
    x = x * -7723592293110705685
    return x ^ ((x >> 31) & 0x1FFFFFFFF)


def _lane(x, shift):
    """The 16-bit lane of word ``x`` at ``shift``, in offset binary (int32 in [0, 65536))."""
    return (((x >> shift) & 0xFFFF) ^ 0x8000).to(tl.int32)


def _dropped(key_offset, threshold, rows, start, nk, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, PER_WORD: tl.constexpr):
    """Bool ``(BLOCK_M, BLOCK_N)``: which logits of rows ``rows`` and columns ``start +
    arange(BLOCK_N)`` the stream drops (lane below ``threshold``).

    ``PER_WORD``: one SplitMix64 word per 4 columns (``start`` a multiple of 4), its four lanes
    interleaved into the columns; else one word per logit, its lane picked by the column (4x
    the integer work, no data movement between lanes). The same bits either way."""
    words = (nk + 3) // 4
    if PER_WORD:
        w = start // 4 + tl.arange(0, BLOCK_N // 4)
        x = _mix(key_offset, rows[:, None] * words + w[None, :])
        lanes = tl.join(tl.join(_lane(x, 0), _lane(x, 32)), tl.join(_lane(x, 16), _lane(x, 48)))
        lanes = tl.reshape(lanes, (BLOCK_M, BLOCK_N))
    else:
        cols = start + tl.arange(0, BLOCK_N)
        x = _mix(key_offset, rows[:, None] * words + (cols // 4)[None, :])
        lanes = _lane(x, ((cols % 4) * 16).to(tl.int64)[None, :])
    return lanes < threshold


def _tile(PTR, b, h, rows, cols, s0, s1, s2, s3, n_rows, n_cols):
    """The ``rows x cols`` tile of the 4-D tensor at ``PTR`` (strides ``s0..s3``) at batch ``b``
    and head ``h``; 0 outside ``n_rows x n_cols``."""
    return tl.load(PTR + b * s0 + h * s1 + rows[:, None] * s2 + cols[None, :] * s3,
                   mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0)


def _store_tile(PTR, b, h, rows, cols, s0, s1, s2, s3, n_rows, n_cols, value):
    """Store ``value`` into the tile of :func:`_tile`, in the tensor's dtype."""
    tl.store(PTR + b * s0 + h * s1 + rows[:, None] * s2 + cols[None, :] * s3,
             value.to(PTR.dtype.element_ty),
             mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols))


def _row_flags(FLAGS, bh, nq, offs_m, HAS_FLAGS: tl.constexpr, BLOCK_M: tl.constexpr):
    """The rows' DropKey-off flags (all 0 without ``HAS_FLAGS``)."""
    flags = tl.zeros([BLOCK_M], dtype=tl.int8)
    if HAS_FLAGS:
        flags = tl.load(FLAGS + bh * nq + offs_m, mask=offs_m < nq, other=0)
    return flags


def _backward_rows(LSE, DELTA, bh, nq, offs_m):
    """The rows' log-sum-exp, ``+inf`` for rows with no key and rows past the end (their
    probabilities are then 0 everywhere), and ``rowsum(dO * O)``."""
    lse = tl.load(LSE + bh * nq + offs_m, mask=offs_m < nq, other=float('-inf'))
    delta = tl.load(DELTA + bh * nq + offs_m, mask=offs_m < nq, other=0.0)
    return tl.where(lse == float('-inf'), float('inf'), lse), delta


def _masked_logits(q, k, b, h, offs_m, start, rows, nq, nk, scale, flags, drop_offset,
                   drop_threshold, BIAS, sb0, sb1, sb2, sb3, ALLOWED, sa0, sa1, sa2, sa3,
                   HAS_BIAS: tl.constexpr, HAS_ALLOWED: tl.constexpr,
                   HAS_FLAGS: tl.constexpr, PRECISION: tl.constexpr, PER_WORD: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """fp32 logits ``q k^T * scale + bias`` of one tile, ``-inf`` where the key is padding,
    not allowed by the host or dropped by DropKey (unless the row's flag turns DropKey off)."""
    offs_n = start + tl.arange(0, BLOCK_N)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    if HAS_BIAS:
        s += _tile(BIAS, b, h, offs_m, offs_n, sb0, sb1, sb2, sb3, nq, nk).to(tl.float32)
    allowed = (offs_m[:, None] < nq) & (offs_n[None, :] < nk)
    if HAS_ALLOWED:
        host = _tile(ALLOWED, b, h, offs_m, offs_n, sa0, sa1, sa2, sa3, nq, nk)
        allowed = allowed & (host != 0)
    dropped = _dropped(drop_offset, drop_threshold, rows, start, nk, BLOCK_M, BLOCK_N, PER_WORD)
    if HAS_FLAGS:
        dropped = dropped & (flags[:, None] == 0)
    return tl.where(allowed & (dropped == 0), s, float('-inf'))


def _forward_kernel(Q, K, V, OUT, LSE, FLAGS, BIAS, ALLOWED,
                    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
                    so0, so1, so2, so3, sb0, sb1, sb2, sb3, sa0, sa1, sa2, sa3,
                    heads, nq, nk, head_dim, value_dim, scale,
                    drop_offset, drop_threshold, dropout_offset, dropout_threshold, dropout_scale,
                    HAS_BIAS: tl.constexpr, HAS_ALLOWED: tl.constexpr,
                    HAS_FLAGS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                    PRECISION: tl.constexpr, PER_WORD: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_DV)
    q = _tile(Q, b, h, offs_m, offs_d, sq0, sq1, sq2, sq3, nq, head_dim)
    rows = (bh * nq + offs_m).to(tl.int64)
    flags = _row_flags(FLAGS, bh, nq, offs_m, HAS_FLAGS, BLOCK_M)
    m_i = tl.full([BLOCK_M], float('-inf'), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for start in range(0, nk, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = _tile(K, b, h, offs_n, offs_d, sk0, sk1, sk2, sk3, nk, head_dim)
        v = _tile(V, b, h, offs_n, offs_e, sv0, sv1, sv2, sv3, nk, value_dim)
        s = _masked_logits(q, k, b, h, offs_m, start, rows, nq, nk, scale, flags, drop_offset,
                           drop_threshold, BIAS, sb0, sb1, sb2, sb3, ALLOWED, sa0, sa1, sa2, sa3,
                           HAS_BIAS, HAS_ALLOWED, HAS_FLAGS, PRECISION, PER_WORD, BLOCK_M,
                           BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float('-inf'), 0.0, m_new)
        p = tl.exp(s - m_ref[:, None])
        alpha = tl.exp(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            gone = _dropped(dropout_offset, dropout_threshold, rows, start, nk, BLOCK_M, BLOCK_N,
                            PER_WORD)
            p = tl.where(gone, 0.0, p * dropout_scale)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    l_ref = tl.where(empty, 1.0, l_i)
    out = acc / l_ref[:, None]
    _store_tile(OUT, b, h, offs_m, offs_e, so0, so1, so2, so3, nq, value_dim, out)
    tl.store(LSE + bh * nq + offs_m, tl.where(empty, float('-inf'), m_i + tl.log(l_ref)),
             mask=offs_m < nq)


def _backward_kv_kernel(Q, K, V, DO, LSE, DELTA, FLAGS, BIAS, ALLOWED, DK, DV,
                        sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
                        so0, so1, so2, so3, sb0, sb1, sb2, sb3, sa0, sa1, sa2, sa3,
                        heads, nq, nk, head_dim, value_dim, scale,
                        drop_offset, drop_threshold, dropout_offset, dropout_threshold,
                        dropout_scale,
                        HAS_BIAS: tl.constexpr, HAS_ALLOWED: tl.constexpr,
                        HAS_FLAGS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                        PRECISION: tl.constexpr, PER_WORD: tl.constexpr,
                        BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_DV: tl.constexpr):
    """dK, dV of one key block (DK, DV: contiguous ``(B, H, Nk, d)`` / ``(B, H, Nk, dv)``)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    key_start = pid_n * BLOCK_N
    offs_n = key_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_DV)
    k = _tile(K, b, h, offs_n, offs_d, sk0, sk1, sk2, sk3, nk, head_dim)
    v = _tile(V, b, h, offs_n, offs_e, sv0, sv1, sv2, sv3, nk, value_dim)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    for start in range(0, nq, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        q = _tile(Q, b, h, offs_m, offs_d, sq0, sq1, sq2, sq3, nq, head_dim)
        do = _tile(DO, b, h, offs_m, offs_e, so0, so1, so2, so3, nq, value_dim)
        lse, delta = _backward_rows(LSE, DELTA, bh, nq, offs_m)
        rows = (bh * nq + offs_m).to(tl.int64)
        flags = _row_flags(FLAGS, bh, nq, offs_m, HAS_FLAGS, BLOCK_M)
        s = _masked_logits(q, k, b, h, offs_m, key_start, rows, nq, nk, scale, flags, drop_offset,
                           drop_threshold, BIAS, sb0, sb1, sb2, sb3, ALLOWED, sa0, sa1, sa2, sa3,
                           HAS_BIAS, HAS_ALLOWED, HAS_FLAGS, PRECISION, PER_WORD, BLOCK_M,
                           BLOCK_N)
        p = tl.exp(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if HAS_DROPOUT:
            gone = _dropped(dropout_offset, dropout_threshold, rows, key_start, nk, BLOCK_M,
                            BLOCK_N, PER_WORD)
            dv += tl.dot(tl.trans(tl.where(gone, 0.0, p * dropout_scale).to(do.dtype)), do,
                         input_precision=PRECISION)
            dp = tl.where(gone, 0.0, dp * dropout_scale)
        else:
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    _store_tile(DK, 0, bh, offs_n, offs_d, 0, nk * head_dim, head_dim, 1, nk, head_dim,
                dk * scale)
    _store_tile(DV, 0, bh, offs_n, offs_e, 0, nk * value_dim, value_dim, 1, nk, value_dim, dv)


def _backward_q_kernel(Q, K, V, DO, LSE, DELTA, FLAGS, BIAS, ALLOWED, DQ, DBIAS,
                       sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
                       so0, so1, so2, so3, sb0, sb1, sb2, sb3, sa0, sa1, sa2, sa3,
                       heads, nq, nk, head_dim, value_dim, scale,
                       drop_offset, drop_threshold, dropout_offset, dropout_threshold,
                       dropout_scale,
                       HAS_BIAS: tl.constexpr, HAS_ALLOWED: tl.constexpr,
                       HAS_FLAGS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       HAS_DBIAS: tl.constexpr, PRECISION: tl.constexpr,
                       PER_WORD: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_DV: tl.constexpr):
    """dQ of one query block (DQ contiguous ``(B, H, Nq, d)``) and, with ``HAS_DBIAS``, the
    logits' gradient into DBIAS (contiguous fp32 ``(B, H, Nq, Nk)``)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_DV)
    q = _tile(Q, b, h, offs_m, offs_d, sq0, sq1, sq2, sq3, nq, head_dim)
    do = _tile(DO, b, h, offs_m, offs_e, so0, so1, so2, so3, nq, value_dim)
    lse, delta = _backward_rows(LSE, DELTA, bh, nq, offs_m)
    rows = (bh * nq + offs_m).to(tl.int64)
    flags = _row_flags(FLAGS, bh, nq, offs_m, HAS_FLAGS, BLOCK_M)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start in range(0, nk, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = _tile(K, b, h, offs_n, offs_d, sk0, sk1, sk2, sk3, nk, head_dim)
        v = _tile(V, b, h, offs_n, offs_e, sv0, sv1, sv2, sv3, nk, value_dim)
        s = _masked_logits(q, k, b, h, offs_m, start, rows, nq, nk, scale, flags, drop_offset,
                           drop_threshold, BIAS, sb0, sb1, sb2, sb3, ALLOWED, sa0, sa1, sa2, sa3,
                           HAS_BIAS, HAS_ALLOWED, HAS_FLAGS, PRECISION, PER_WORD, BLOCK_M,
                           BLOCK_N)
        p = tl.exp(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if HAS_DROPOUT:
            gone = _dropped(dropout_offset, dropout_threshold, rows, start, nk, BLOCK_M, BLOCK_N,
                            PER_WORD)
            dp = tl.where(gone, 0.0, dp * dropout_scale)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        if HAS_DBIAS:
            _store_tile(DBIAS, 0, bh.to(tl.int64), offs_m, offs_n, 0, nq * nk, nk, 1, nq, nk, ds)
    _store_tile(DQ, 0, bh, offs_m, offs_d, 0, nq * head_dim, head_dim, 1, nq, head_dim,
                dq * scale)


_HELPERS = ('_mix', '_lane', '_dropped', '_tile', '_store_tile', '_row_flags', '_backward_rows',
            '_masked_logits')
_KERNEL_FNS = {'forward': _forward_kernel, 'backward_kv': _backward_kv_kernel,
               'backward_q': _backward_q_kernel}


def kernels() -> dict:
    """The kernels as Triton JIT functions, built at first use (:func:`build_kernels`)."""
    if not _BUILT:
        _BUILT.update(build_kernels())
    return _BUILT


def build_kernels() -> dict:
    """A new set of the kernels as Triton JIT functions (``{'forward', 'backward_kv',
    'backward_q'}``), with their own compilation caches.

    Each plain function above is rebuilt in one scope where the helpers are JIT functions too
    (Triton kernels call only JIT functions). In a process started with ``TRITON_INTERPRET=1``
    ``triton.jit`` gives interpreted functions, which run on CPU tensors (the tests).
    """
    import triton
    scope = dict(globals())
    for helper in _HELPERS:
        scope[helper] = triton.jit(_rebuild(globals()[helper], scope))
    return {kind: triton.jit(_rebuild(fn, scope)) for kind, fn in _KERNEL_FNS.items()}


def _rebuild(fn, scope: dict) -> types.FunctionType:
    """``fn`` with the globals ``scope``."""
    new = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__annotations__ = dict(fn.__annotations__)
    new.__doc__ = fn.__doc__
    return new
