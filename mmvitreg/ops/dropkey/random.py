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
from typing import Optional, Tuple

import torch

from . import compiled
from .splitmix import GOLDEN, MASK64, mix64, mix64_, signed

__all__ = [
    'set_seed', 'get_seed', 'set_step', 'get_step', 'get_generation', 'reset_context',
    'dist_rank', 'mix64', 'call_key', 'next_key', 'words_per_row', 'random_lanes', 'lanes_below',
    'for_each_block', 'cpu_block_rows', 'word_terms', 'lane_terms'
]

#: int64 words per intra-op thread in one CPU block: large enough to amortise the per-op cost of
#: the eager float passes over the block, small enough for the block to stay in cache
CPU_BLOCK_WORDS = 1 << 17
LANES = 4  # 16-bit lanes per 64-bit word


# ------------------------------------------------------------------------------------------------
# the step context
# ------------------------------------------------------------------------------------------------
_CONTEXT = {'seed': None, 'step': 0, 'generation': 0, 'global_calls': 0, 'global_gen': None}


def set_seed(seed: Optional[int]) -> None:
    """Fix the run seed of all masks (None: follow ``torch.initial_seed()``). All 64 bits count."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f'DropKey seed must be an integer or None, got {seed!r}')
    _CONTEXT['seed'] = None if seed is None else seed & MASK64


def get_seed() -> int:
    seed = _CONTEXT['seed']
    return torch.initial_seed() & MASK64 if seed is None else seed


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
        key = mix64((key ^ (field & MASK64)) + GOLDEN)
    return signed(key)


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


def _column_range(num_cols: int, cols: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    c0, c1 = (0, num_cols) if cols is None else (int(cols[0]), int(cols[1]))
    if c0 % LANES or not 0 <= c0 <= c1 <= num_cols:
        raise ValueError(f'column range {cols} of {num_cols} columns must start at a multiple '
                         f'of {LANES}')
    return c0, c1


def word_terms(key: int, rows: torch.Tensor, num_cols: int,
               cols: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(row_term (R,), col_term (w,))`` with ``splitmix64(key, row * W + word) =
    mix64(row_term[i] + col_term[j])`` for the words ``j`` covering columns ``cols`` (default
    all) of ``num_cols``-column rows (``W = ceil(num_cols / 4)``)."""
    c0, c1 = _column_range(num_cols, cols)
    w0, w1 = c0 // LANES, words_per_row(c1)
    golden = signed(GOLDEN)
    # splitmix64 input = key + (row * W + word + 1) * G = row * (W * G) + (word * G + key + G)
    col_term = torch.arange(w0, w1, dtype=torch.int64, device=rows.device).mul_(golden).add_(
        signed(key + GOLDEN))
    row_term = rows.reshape(-1).to(torch.int64) * signed(words_per_row(num_cols) * GOLDEN)
    return row_term, col_term


def lane_terms(key: int, rows: torch.Tensor, num_cols: int,
               cols: Optional[Tuple[int, int]] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per column rather than per word: ``(row_term (R,), col_term (n,), shift (n,))`` with the
    lane of ``(rows[i], column c0 + j)`` equal to ``mix64(row_term[i] + col_term[j]) >>
    shift[j]`` (low 16 bits), for a loop that computes every column on its own."""
    c0, c1 = _column_range(num_cols, cols)
    row_term, word_col = word_terms(key, rows, num_cols, (c0, c1))
    col_term = word_col.repeat_interleave(LANES)[:c1 - c0]
    shift = torch.arange(c0, c1, dtype=torch.int64, device=rows.device).remainder_(LANES).mul_(16)
    return row_term, col_term, shift


def for_each_block(key: int, rows: torch.Tensor, num_cols: int, emit,
                   cols: Optional[Tuple[int, int]] = None) -> None:
    """Compute the lanes of ``rows`` block by block and call ``emit(r0, r1, lanes)`` with the
    int16 ``(r1 - r0, num_cols)`` lanes of rows ``r0:r1`` (a view valid during the call).

    ``cols = (c0, c1)``: only columns ``c0:c1`` of the ``num_cols``-column rows (``c0`` a
    multiple of 4, the lanes of a word); ``lanes`` is then ``(r1 - r0, c1 - c0)``.

    On CPU blocks hold ~``CPU_BLOCK_WORDS`` words per thread so the temporaries of ``emit``
    stay in cache; CUDA calls and CPU calls of at least :data:`.compiled.MIN_WORDS` words are
    hashed by the compiled loop of :mod:`.compiled` (same bits as the eager ops).
    """
    c0, c1 = _column_range(num_cols, cols)
    row_term, col_term = word_terms(key, rows, num_cols, (c0, c1))
    n_rows, w = row_term.numel(), col_term.numel()
    if n_rows == 0 or w == 0:
        return
    device = rows.device
    on_cpu = device.type == 'cpu'
    block_rows = min(n_rows, cpu_block_rows(w) if on_cpu else n_rows)
    use_compiled = not on_cpu or n_rows * w >= compiled.MIN_WORDS
    words = torch.empty(block_rows, w, dtype=torch.int64, device=device)
    tmp = None
    for r0 in range(0, n_rows, block_rows):
        r1 = min(n_rows, r0 + block_rows)
        x = words[:r1 - r0]
        if use_compiled:
            # whole blocks of fresh (non-view) tensors: one compiled graph for every call
            block = torch.zeros(block_rows, 1, dtype=torch.int64, device=device)
            block[:r1 - r0, 0] = row_term[r0:r1]
            use_compiled = compiled.compiled_mix_words(block, col_term, words) is not None
        if not use_compiled:
            tmp = torch.empty_like(words) if tmp is None else tmp
            torch.add(row_term[r0:r1, None], col_term, out=x)
            mix64_(x, tmp[:r1 - r0])
        emit(r0, r1, x.view(torch.int16)[:, :c1 - c0])
