"""Counter-based randomness for DropKey masks: a pure function of the call, not RNG state.

Every mask element is a function of a 64-bit *call key* and its position:

* the call key mixes ``(run seed, training iteration, layer id, data-parallel rank, call
  counter)`` with the SplitMix64 finaliser (:func:`call_key`);
* the mask of a call with rows ``r = (b * heads + h) * Nq + q`` and ``W = ceil(Nk / 4)`` words
  per row takes lane ``k % 4`` (16 bits, read as int16) of ``splitmix64(key, r * W + k // 4)``,
  i.e. of the SplitMix64 output number ``r * W + k // 4`` of the stream seeded with the call
  key; logit ``(b, h, q, k)`` is dropped iff ``lane + 32768 < round(p * 65536)``.

Everything is int64 tensor arithmetic with wrap-around (identical on CPU and CUDA, in any
chunking, and in the FlexAttention ``score_mod``). The run seed defaults to
``torch.initial_seed()`` (what ``torch.manual_seed`` / mmengine's ``randomness.seed`` set) and
can be fixed with :func:`set_seed`; the iteration comes from a small global step context
(:func:`set_step`) that a training loop or hook sets before each iteration. Nothing here reads
or advances the global torch RNG, so masks survive ``--resume`` exactly.
"""
from typing import Optional

import torch

__all__ = [
    'set_seed', 'get_seed', 'set_step', 'get_step', 'get_generation', 'reset_context',
    'dist_rank', 'mix64', 'call_key', 'next_key', 'words_per_row', 'random_lanes', 'lanes_below',
    'for_each_block', 'cpu_block_rows'
]

_MASK64 = (1 << 64) - 1
#: SplitMix64 constants (Steele, Lea & Flood 2014; Vigna's finaliser), as unsigned ints
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SHIFTS = ((30, MUL1), (27, MUL2), (31, None))
#: int64 words processed per block on CPU (keeps the temporaries in the L2 cache)
CPU_BLOCK_WORDS = 1 << 16
LANES = 4  # 16-bit lanes per 64-bit word


def _signed(x: int) -> int:
    """Unsigned 64-bit int -> the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def mix64(x: int) -> int:
    """SplitMix64 finaliser on Python ints (unsigned 64-bit in, unsigned 64-bit out)."""
    x &= _MASK64
    for shift, mul in SHIFTS:
        x ^= x >> shift
        if mul is not None:
            x = (x * mul) & _MASK64
    return x


def mix64_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """In-place SplitMix64 finaliser on an int64 tensor (``tmp``: scratch of the same shape).

    int64 ``>>`` is arithmetic, so the logical shift masks off the sign-extended bits.
    """
    for shift, mul in SHIFTS:
        torch.bitwise_right_shift(x, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        x.bitwise_xor_(tmp)
        if mul is not None:
            x.mul_(_signed(mul))
    return x


# ------------------------------------------------------------------------------------------------
# the step context
# ------------------------------------------------------------------------------------------------
_CONTEXT = {'seed': None, 'step': 0, 'generation': 0, 'global_calls': 0, 'global_gen': None}


def set_seed(seed: Optional[int]) -> None:
    """Fix the run seed of all masks (None: follow ``torch.initial_seed()``). All 64 bits count."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f'DropKey seed must be an integer or None, got {seed!r}')
    _CONTEXT['seed'] = None if seed is None else seed & _MASK64


def get_seed() -> int:
    seed = _CONTEXT['seed']
    return torch.initial_seed() & _MASK64 if seed is None else seed


def set_step(step: int) -> None:
    """Start iteration ``step``: the next masks belong to it and every call counter restarts at 0
    (also when ``step`` equals the current one)."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f'DropKey step must be an integer, got {step!r}')
    _CONTEXT['step'] = step
    _CONTEXT['generation'] += 1


def get_step() -> int:
    return _CONTEXT['step']


def get_generation() -> int:
    """Incremented by every :func:`set_step` (call counters restart when it changes)."""
    return _CONTEXT['generation']


def reset_context() -> None:
    """Back to the defaults (seed from torch, step 0); for tests and fresh runs."""
    _CONTEXT.update(seed=None, step=0, generation=_CONTEXT['generation'] + 1, global_calls=0,
                    global_gen=None)


def dist_rank() -> int:
    """The data-parallel rank (``torch.distributed``; 0 when not initialised)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def call_key(layer_id: int,
             call: int,
             *,
             seed: Optional[int] = None,
             step: Optional[int] = None,
             rank: Optional[int] = None) -> int:
    """The 64-bit key of one DropKey call (as a signed int64 value).

    A hash of ``(seed, step, layer_id, rank, call)``: any change of any field (all 64 seed bits
    included) gives an unrelated mask; defaults come from the step context and the process group.
    """
    seed = get_seed() if seed is None else seed
    step = get_step() if step is None else step
    rank = dist_rank() if rank is None else rank
    key = mix64(seed + GOLDEN)
    for field in (step, layer_id, rank, call):
        key = mix64((key ^ (field & _MASK64)) + GOLDEN)
    return _signed(key)


def next_key(layer_id: int = -1) -> int:
    """A fresh call key for calls without a module (counter restarts when the step changes)."""
    if _CONTEXT['global_gen'] != _CONTEXT['generation']:
        _CONTEXT.update(global_gen=_CONTEXT['generation'], global_calls=0)
    call = _CONTEXT['global_calls']
    _CONTEXT['global_calls'] = call + 1
    return call_key(layer_id, call)


# ------------------------------------------------------------------------------------------------
# random lanes
# ------------------------------------------------------------------------------------------------
def words_per_row(num_cols: int) -> int:
    return (num_cols + LANES - 1) // LANES


def random_lanes(key: int, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    """int16 tensor ``(R, num_cols)``: the 16-bit lanes of the given (linear) row indices.

    Element ``(i, c)`` is lane ``c % 4`` of ``splitmix64(key, rows[i] * W + c // 4)`` with
    ``W = ceil(num_cols / 4)``; the value depends only on ``(key, rows[i], c, num_cols)``.
    """
    out = torch.empty(rows.numel(), num_cols, dtype=torch.int16, device=rows.device)

    def emit(r0, r1, lanes):
        out[r0:r1] = lanes

    for_each_block(key, rows, num_cols, emit)
    return out


def _lane_threshold(threshold, device):
    """Unsigned 16-bit threshold(s) -> the signed int16 comparison value(s)."""
    if torch.is_tensor(threshold):
        thr = (threshold.to(torch.int32) - (1 << 15)).clamp(-(1 << 15), (1 << 15) - 1)
        return thr.to(torch.int16).to(device)
    return int(threshold) - (1 << 15)


def lanes_below(key: int, rows: torch.Tensor, num_cols: int, threshold) -> torch.Tensor:
    """Bool ``(R, num_cols)``: ``lane + 32768 < threshold`` with the lane read as int16, i.e.
    True with probability ``threshold / 65536``. ``threshold``: an int, or an int tensor
    ``(num_cols,)`` per column."""
    n = rows.numel()
    if not torch.is_tensor(threshold) and int(threshold) <= 0:
        return torch.zeros(n, num_cols, dtype=torch.bool, device=rows.device)
    thr = _lane_threshold(threshold, rows.device)
    out = torch.empty(n, num_cols, dtype=torch.bool, device=rows.device)

    def emit(r0, r1, lanes):
        torch.lt(lanes, thr, out=out[r0:r1])

    for_each_block(key, rows, num_cols, emit)
    return out


def cpu_block_rows(words: int) -> int:
    """Rows per CPU block: ``CPU_BLOCK_WORDS`` words per intra-op thread (each thread's share of
    a block stays in its L2 cache; torch parallelises ops above 32768 elements)."""
    return max(1, CPU_BLOCK_WORDS * max(1, torch.get_num_threads()) // words)


def for_each_block(key: int, rows: torch.Tensor, num_cols: int, emit) -> None:
    """Compute the lanes of ``rows`` block by block and call ``emit(r0, r1, lanes)`` with the
    int16 ``(r1 - r0, num_cols)`` lanes of rows ``r0:r1`` (a view valid during the call).

    On CPU blocks hold ~``CPU_BLOCK_WORDS`` words so all temporaries stay in cache.
    """
    rows = rows.reshape(-1).to(torch.int64)
    n_rows, w = rows.numel(), words_per_row(num_cols)
    if n_rows == 0 or num_cols == 0:
        return
    device = rows.device
    block_rows = n_rows if device.type != 'cpu' else cpu_block_rows(w)
    block_rows = min(block_rows, n_rows)
    golden = _signed(GOLDEN)
    # splitmix64 input = key + (row * W + col + 1) * G = row * (W * G) + (col * G + key + G)
    col_term = torch.arange(w, dtype=torch.int64, device=device).mul_(golden).add_(
        _signed(key + GOLDEN))
    row_term = rows * _signed(w * GOLDEN)
    words = torch.empty(block_rows, w, dtype=torch.int64, device=device)
    tmp = torch.empty_like(words)
    for r0 in range(0, n_rows, block_rows):
        r1 = min(n_rows, r0 + block_rows)
        x, t = words[:r1 - r0], tmp[:r1 - r0]
        torch.add(row_term[r0:r1, None], col_term, out=x)
        mix64_(x, t)
        emit(r0, r1, x.view(torch.int16)[:, :num_cols])
