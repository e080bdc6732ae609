"""The regularizer keys of ``Regularized``: one function per mechanism.

``@register_regularizer('name')`` registers ``attach(model, cfg) -> rows``: it modifies the
built ``model`` in place through sites (:mod:`mmvitreg.regularizers.site`) and returns one
``(module path, mechanism, settings)`` row per place it changed, which :func:`apply_regularizers`
logs as one table. Mechanisms do not depend on each other's order: attention mechanisms act in
the phase their stage declares (:mod:`mmvitreg.regularizers.stage`), loss mechanisms add separate
terms, so the keys of a config apply in any order (only two attention mechanisms of the same
phase apply in the keys' order). Every attach function runs wrapped by
:func:`~mmvitreg.regularizers.pairing.keep_host_rng`: the modules it adds are built and
initialised on their own seed, so the host draws the same random numbers as without them.
"""
import logging
import math
import numbers
from typing import Callable, Dict, List, Sequence, Tuple

import torch.nn as nn

from .pairing import keep_host_rng

__all__ = ['REGULARIZERS', 'register_regularizer', 'apply_regularizers', 'format_summary',
           'SummaryRow', 'check_finite_weight']

SummaryRow = Tuple[str, str, str]  # (module path, mechanism, settings)
Attach = Callable[[nn.Module, dict], List[SummaryRow]]

#: regularizer key -> attach function
REGULARIZERS: Dict[str, Attach] = {}


def register_regularizer(name: str) -> Callable[[Attach], Attach]:
    """Decorator registering ``attach(model, cfg) -> rows`` as the ``Regularized`` key ``name``.

    Registers and returns it wrapped by :func:`~.pairing.keep_host_rng`, so every call, through
    ``Regularized`` or directly, builds and initialises the modules it adds without touching the
    host's random stream (a variant stays paired by seed with its baseline).
    """

    def _register(fn: Attach) -> Attach:
        current = REGULARIZERS.get(name)
        if current is not None and getattr(current, '__wrapped__', current) is not fn:
            raise KeyError(f'regularizer {name!r} is already registered')
        REGULARIZERS[name] = current or keep_host_rng(name, fn)
        return REGULARIZERS[name]

    return _register


def check_options(mechanism: str, cfg: dict, allowed: Sequence[str]) -> dict:
    """``cfg`` as a dict; one clear ``KeyError`` for unknown options."""
    if not isinstance(cfg, dict):
        raise TypeError(f'{mechanism} options must be a dict (or True for the defaults), '
                        f'got {cfg!r}')
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise KeyError(f'unknown {mechanism} option(s) {unknown}; allowed: {sorted(allowed)}')
    return dict(cfg)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    return value


def check_finite_weight(value, name: str) -> float:
    """``value`` as float if it is a finite real number >= 0 (not a bool); one clear error
    otherwise (a NaN/inf loss weight would only show as a NaN loss at the first iteration)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a finite number >= 0, got {value!r}')
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
    return float(value)


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The rows as a fixed-width table (module, mechanism, settings)."""
    header = ('module', 'mechanism', 'settings')
    widths = [max(len(r[i]) for r in list(rows) + [header]) for i in range(3)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(header, widths)).rstrip(),
             '  '.join('-' * w for w in widths)]
    lines += ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return '\n'.join(lines)


def _log(message: str) -> None:
    try:
        from mmengine.logging import print_log
    except ImportError:  # torch-only use
        logging.getLogger('mmvitreg').info(message)
    else:
        print_log(message, logger='current')


def apply_regularizers(model: nn.Module, **regularizer_cfgs) -> nn.Module:
    """Apply the named regularizers to ``model`` in place and return it.

    A value of ``None`` or ``False`` leaves that regularizer off (so base configs can carry the
    key), ``True`` uses its defaults. Logs one table of what was switched on where.
    """
    unknown = sorted(set(regularizer_cfgs) - set(REGULARIZERS))
    if unknown:
        raise KeyError(f'unknown regularizer key(s) {unknown}; known regularizer keys: '
                       f'{sorted(REGULARIZERS)}')
    rows: List[SummaryRow] = []
    for name, cfg in regularizer_cfgs.items():
        if cfg is None or cfg is False:
            continue
        rows += REGULARIZERS[name](model, {} if cfg is True else cfg)
    if rows:
        _log(f'mmvitreg regularizers on {type(model).__name__}:\n{format_summary(rows)}')
    return model
