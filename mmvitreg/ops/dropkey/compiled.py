"""The SplitMix64 words of DropKey masks as one compiled CPU loop (``torch.compile``).

Eager torch evaluates the finaliser as ~11 separate int64 passes over every block of words; the
inductor-compiled function does the same arithmetic in one vectorised loop, 5-10x faster on a
2-core AVX-512 machine, and with int64 wrap-around it gives the same bits. Used on CPU for
calls whose mask has at least :data:`MIN_WORDS` words (1M logits: every shipped config's
training shape); smaller masks, as in tests and toy runs, stay eager, so they never pay for the
build.

The compiled loop is built once per process (dynamic shapes: one compilation for every block
size; inductor caches it on disk: ~11 s the first time on a machine, ~5 s in later processes).
The first compiled block of a process is checked against the eager result; if compilation fails
(e.g. no C++ compiler) or the check fails, a warning is logged and the process stays on the
eager ops.
``MMVITREG_DROPKEY_COMPILE=0`` selects the eager ops from the start.
"""
import logging
import os
from typing import Optional

import torch

from .splitmix import mix64_sum, mix64_tensor

__all__ = ['MIN_WORDS', 'mix_words', 'compiled_mix_words', 'compile_enabled', 'kernel_state',
           'warm_up']

#: CPU masks (whole calls) with fewer words than this use eager ops
MIN_WORDS = 1 << 18

_LOG = logging.getLogger(__name__)
_STATE = {'fn': None, 'checked': False, 'failed': None}


def mix_words(row_term: torch.Tensor, col_term: torch.Tensor, out: torch.Tensor) -> None:
    """``out = splitmix64(row_term + col_term)`` (broadcast; int64, wrap-around)."""
    out.copy_(mix64_tensor(row_term + col_term))


def compile_enabled() -> bool:
    """False when ``MMVITREG_DROPKEY_COMPILE=0`` or the compiled loop failed in this process."""
    return os.environ.get('MMVITREG_DROPKEY_COMPILE', '1') != '0' and _STATE['failed'] is None


def kernel_state() -> dict:
    """``{'compiled': built, 'checked': verified against eager, 'failed': reason or None}``."""
    return {'compiled': _STATE['fn'] is not None, 'checked': _STATE['checked'],
            'failed': _STATE['failed']}


def _disable(reason: str) -> None:
    _STATE['failed'] = reason
    _LOG.warning('DropKey: the compiled CPU mask kernel is off for this process (%s); masks '
                 'are generated with eager torch ops (same bits, slower)', reason)


def compiled_mix_words(row_term: torch.Tensor, col_term: torch.Tensor,
                       out: torch.Tensor) -> Optional[torch.Tensor]:
    """:func:`mix_words` into ``out`` through the compiled loop; returns ``out``, or None when
    the loop is off (then compute the words with eager ops). The first call of a process is
    checked against the eager ops."""
    if not compile_enabled():
        return None
    if _STATE['fn'] is None:
        _LOG.info('DropKey: compiling the CPU mask kernel (once per process; cached on disk)')
        _STATE['fn'] = torch.compile(mix_words, dynamic=True)
    try:
        with torch.no_grad():
            _STATE['fn'](row_term, col_term, out)
    except Exception as err:  # no C++ compiler, unsupported platform, ...
        _disable(f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'[:200])
        return None
    if not _STATE['checked']:
        if not torch.equal(out, mix64_sum(row_term, col_term)):
            _disable('its result differed from the eager ops on this machine')
            return None
        _STATE['checked'] = True
    return out


def warm_up() -> dict:
    """Build and check the compiled loop now (it is otherwise built by the first large CPU mask),
    e.g. before timing or measuring memory; returns :func:`kernel_state`."""
    # sizes that differ from each other (no size equalities for the dynamic shapes to assume)
    rows = torch.arange(3917, dtype=torch.int64)[:, None] * 1000003
    cols = torch.arange(67, dtype=torch.int64)
    out = torch.empty(rows.shape[0], cols.shape[0], dtype=torch.int64)
    compiled_mix_words(rows, cols, out)
    return kernel_state()
