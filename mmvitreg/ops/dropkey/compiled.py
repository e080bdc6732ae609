"""DropKey's CPU mask loops compiled with ``torch.compile`` (inductor): the same bits as eager.

Eager torch evaluates the SplitMix64 finaliser as ~11 separate int64 passes over every block of
words, and the additive mask as 4 more float passes; the compiled functions do the same
arithmetic in one vectorised loop each (int64 wrap-around, so the same bits):

* :func:`mix_words`: the words of a block; used for boolean masks;
* :func:`additive_mask`: the additive float mask (0 kept, ``-inf`` dropped) straight from the
  hash, one hash per logit (lane ``c % 4`` of word ``c // 4``, as in :mod:`.random`) and no
  intermediate words; used by the CPU flash path.

They are used on CPU for masks of at least 1M logits (:data:`MIN_WORDS` words per call for
the words, :data:`MIN_LOGITS` per box for the additive mask: every shipped config's training
shape); smaller masks, as in tests and toy runs, stay eager, so they never pay for the build.
Each loop is built once per process on first use (dynamic shapes: one compilation for every
size; inductor caches the build on disk for later processes; build times: README). The first
result of each loop in a process is checked against the same function run eagerly; if
``torch.compile`` itself raises (e.g. Dynamo unsupported on this Python), the compiled loop
raises (e.g. no C++ compiler) or a check fails, one warning is logged and the process stays on
the eager ops. ``MMVITREG_DROPKEY_COMPILE=0``
selects the eager ops from the start.
"""
import logging
import os
from typing import Callable, Optional

import torch

from .splitmix import lane_below, mix64_tensor
from .tracing import is_tracing

__all__ = ['MIN_WORDS', 'MIN_LOGITS', 'mix_words', 'additive_mask', 'compiled_mix_words',
           'compiled_additive_mask', 'compile_enabled', 'kernel_state', 'warm_up']

#: CPU masks (whole calls) with fewer words than this use eager ops
MIN_WORDS = 1 << 18
#: the same for the additive mask loop, in logits (4 per word)
MIN_LOGITS = 4 * MIN_WORDS

_LOG = logging.getLogger(__name__)
_STATE = {'fns': {}, 'checked': set(), 'failed': None}


def mix_words(row_term: torch.Tensor, col_term: torch.Tensor, out: torch.Tensor) -> None:
    """``out = splitmix64(row_term + col_term)`` (broadcast; int64, wrap-around)."""
    out.copy_(mix64_tensor(row_term + col_term))


def additive_mask(row_term: torch.Tensor, col_term: torch.Tensor, shift: torch.Tensor,
                  threshold: torch.Tensor, out: torch.Tensor) -> None:
    """``out = -inf`` where the lane ``splitmix64(row_term + col_term) >> shift`` is dropped
    (:func:`.splitmix.lane_below` ``threshold``), else 0 (broadcast ``(R, 1)`` rows with ``(n,)``
    columns; see :func:`.random.lane_terms`)."""
    dropped = lane_below(mix64_tensor(row_term + col_term), shift, threshold)
    out.copy_(torch.where(dropped, float('-inf'), 0.0))


def compile_enabled() -> bool:
    """False when ``MMVITREG_DROPKEY_COMPILE=0`` or a compiled loop failed in this process."""
    return os.environ.get('MMVITREG_DROPKEY_COMPILE', '1') != '0' and _STATE['failed'] is None


def kernel_state() -> dict:
    """``{'compiled': loops built, 'checked': loops verified against eager, 'failed': reason or
    None}`` (loop names: ``'mix_words'``, ``'additive_mask'``)."""
    return {'compiled': sorted(_STATE['fns']), 'checked': sorted(_STATE['checked']),
            'failed': _STATE['failed']}


def _disable(reason: str) -> None:
    _STATE['failed'] = reason
    _LOG.warning('DropKey: the compiled CPU mask kernels are off for this process (%s); masks '
                 'are generated with eager torch ops (same bits, slower)', reason)


def failure_reason(err: BaseException) -> str:
    """One line naming an exception: its type and the first line of its message (<= 200 chars)."""
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0] if text else ""}'[:200]


def _build(fn: Callable) -> Callable:
    """The compiled loop of ``fn`` (built once per process)."""
    name = fn.__name__
    if name not in _STATE['fns']:
        _LOG.info('DropKey: compiling the CPU mask loop %s (once per process; cached on disk)',
                  name)
        _STATE['fns'][name] = torch.compile(fn, dynamic=True)
    return _STATE['fns'][name]


def _run(fn: Callable, *args: torch.Tensor) -> Optional[torch.Tensor]:
    """``fn(*args)`` through its compiled loop (the last argument is the output); returns the
    output, or None when the loops are off or the caller is being traced by ``torch.compile``
    (then the caller's eager ops are traced instead).

    Every failure of the compile machinery turns the loops off for the process with one
    warning: ``torch.compile`` raising, the compiled loop raising (at its first or a later
    call), or its first result differing from ``fn`` run eagerly."""
    if not compile_enabled() or is_tracing():
        return None
    name, out = fn.__name__, args[-1]
    try:  # no C++ compiler, Dynamo unsupported on this Python, unsupported platform, ...
        loop = _build(fn)
        with torch.no_grad():
            loop(*args)
    except Exception as err:
        _disable(failure_reason(err))
        return None
    if name not in _STATE['checked']:
        expected = torch.empty_like(out)
        fn(*args[:-1], expected)
        if not torch.equal(out, expected):
            _disable(f'the result of {name} differed from the eager ops on this machine')
            return None
        _STATE['checked'].add(name)
    return out


def compiled_mix_words(row_term: torch.Tensor, col_term: torch.Tensor,
                       out: torch.Tensor) -> Optional[torch.Tensor]:
    """:func:`mix_words` into ``out`` through the compiled loop; returns ``out``, or None when
    the loops are off (then compute the words with eager ops)."""
    return _run(mix_words, row_term, col_term, out)


def compiled_additive_mask(row_term: torch.Tensor, col_term: torch.Tensor, shift: torch.Tensor,
                           threshold: torch.Tensor,
                           out: torch.Tensor) -> Optional[torch.Tensor]:
    """:func:`additive_mask` into ``out`` through the compiled loop; returns ``out``, or None
    when the loops are off (then use the eager ops)."""
    return _run(additive_mask, row_term, col_term, shift, threshold, out)


def warm_up() -> dict:
    """Build and check both compiled loops now (otherwise built by the first large CPU mask),
    e.g. before timing or measuring memory; returns :func:`kernel_state`."""
    # sizes that differ from each other (no size equalities for the dynamic shapes to assume)
    rows = torch.arange(3917, dtype=torch.int64)[:, None] * 1000003
    cols = torch.arange(67, dtype=torch.int64)
    compiled_mix_words(rows, cols, torch.empty(rows.shape[0], cols.shape[0], dtype=torch.int64))
    shift = cols.remainder(4).mul_(16)
    compiled_additive_mask(rows, cols, shift, torch.tensor(6554),
                           torch.empty(rows.shape[0], cols.shape[0]))
    return kernel_state()
