"""DropKey under ``torch.compile``: the sampling code is excluded from tracing, not compiled.

A DropKey call reads and advances Python state (the call counter, the RNG fingerprint of
:mod:`.replay`) and hashes 64-bit keys with Python integers, which Dynamo cannot trace into a
graph. :func:`not_traced` marks the entry points (a layer's sampling call, the public kernels,
the custom autograd backwards that regenerate masks) with ``torch.compiler.disable``: a graph
break around them, where they run eagerly with unchanged semantics, once per call as without
compilation. So a compiled model draws the masks of the eager one for the same seed, step and
call counter.
"""
from typing import Callable, TypeVar

import torch

__all__ = ['not_traced', 'is_tracing']

F = TypeVar('F', bound=Callable)


def not_traced(fn: F) -> F:
    """``fn`` excluded from ``torch.compile`` tracing (``torch.compiler.disable``); ``fn``
    itself on torch without it."""
    disable = getattr(getattr(torch, 'compiler', None), 'disable', None)
    return fn if disable is None else disable(fn)


def is_tracing() -> bool:
    """True while Dynamo traces the caller (e.g. a whole-model ``torch.compile``)."""
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    return bool(is_compiling is not None and is_compiling())
