"""Safe checkpoint loading for ``load_from``, ``init_cfg=dict(type='Pretrained')``, ``--resume``,
``tools/test.py`` and the model converters.

torch >= 2.6 loads with ``weights_only=True``: a restricted unpickler that rebuilds tensors and
plain containers but never imports or calls anything else, so a downloaded file cannot run code.
We keep that default and differ from stock mmengine (which calls ``torch.load`` with torch's
defaults) in two deliberate ways:

* **Plain values are allow-listed**: ``argparse.Namespace`` (the ``args`` official DeiT/DHVT/DeepViT
  training scripts store next to the weights) and numpy scalars, dtypes and arrays (mmengine's
  ``meta``/``message_hub``).
* **mmengine's training state is skipped, not executed**: a checkpoint written by an mmengine runner
  also pickles its message hub (``HistoryBuffer`` objects and bound methods via ``getattr``). In a
  safe load these become inert :class:`SkippedObject` placeholders, so such a file still gives
  its ``state_dict`` and ``meta`` (everything ``load_from`` and ``tools/test.py`` need).
  Placeholders are accepted only under the top-level ``message_hub`` key; anywhere else the file
  is refused.

The full pickle (``weights_only=False``) is used only for a *trusted* file: the checkpoint that
``tools/train.py --resume`` restores from the run's own work dir, a file inside a location passed to
:func:`trusted_checkpoints`, or any file when the user opts in (``--trust-checkpoint`` on the tools,
or ``MMVITREG_TRUST_CHECKPOINTS=1`` in the environment). Anything else that needs more than the
allow-list is refused with one :class:`UntrustedCheckpointError` line that says how to opt in.
"""
import argparse
import os
import os.path as osp
import pickle
from contextlib import contextmanager
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch

TRUST_ENV = 'MMVITREG_TRUST_CHECKPOINTS'
TRUST_HINT = (f'if you trust this file, pass --trust-checkpoint to tools/train.py or '
              f'tools/test.py, or set {TRUST_ENV}=1')

# Globals of mmengine's training state that a safe load replaces by placeholders.
TRAINING_STATE_GLOBALS = (
    'mmengine.logging.history_buffer.HistoryBuffer',
    'builtins.getattr',   # HistoryBuffer pickles its statistics methods as getattr(cls, name)
)
# The only top-level key of a checkpoint allowed to hold placeholders.
TRAINING_STATE_KEY = 'message_hub'

_trusted_locations: List[str] = []
_trust_all = False


class UntrustedCheckpointError(ValueError):
    """A checkpoint needs more than the safe unpickler allows and the file is not trusted."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file that torch cannot read (truncated by a kill during a save, corrupt)."""


class SkippedObject:
    """Inert stand-in for an object of mmengine's training state that a safe load did not unpickle.

    It records what it replaces and accepts any construction arguments and state, but never calls
    or imports anything. Using it like the real object raises :class:`UntrustedCheckpointError`.
    """
    origin = 'object'

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        raise UntrustedCheckpointError(
            f'{self.origin} was not unpickled (training state is only loaded from trusted '
            f'checkpoints); {TRUST_HINT}')

    def __repr__(self) -> str:
        return f'<{self.origin}: not loaded>'


def _placeholder(origin: str) -> type:
    return type('SkippedObject', (SkippedObject,), {'origin': origin})


def _plain_dtype(*args, **kwargs) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing object dtypes (their arrays hold arbitrary
    Python objects instead of numbers)."""
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f'numpy object dtype {dtype!r} is not plain data')
    return dtype


def _plain_globals() -> List[Tuple[Any, str]]:
    """(object, pickled name) pairs of the plain types real checkpoints carry."""
    pairs: List[Tuple[Any, str]] = [(argparse.Namespace, 'argparse.Namespace'),
                                    (_plain_dtype, 'numpy.dtype'), (np.ndarray, 'numpy.ndarray'),
                                    (bytes, 'builtins.bytes')]  # empty numpy arrays
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # numpy 1.x / 2.x names
        pairs += [(multiarray.scalar, f'{module}.scalar'),
                  (multiarray._reconstruct, f'{module}._reconstruct')]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25: one class per dtype (BUILD needs them)
    if dtypes is not None:
        pairs += [(cls, f'numpy.dtypes.{name}') for name, cls in vars(dtypes).items()
                  if isinstance(cls, type) and issubclass(cls, np.dtype)
                  and name != 'ObjectDType']
    return pairs


def _object_arrays(obj: Any, path: str = '', depth: int = 0) -> List[str]:
    """Where ``obj`` holds numpy values of an object dtype (e.g. a structured dtype whose fields
    were set to objects after construction)."""
    if isinstance(obj, (np.ndarray, np.generic, np.dtype)):
        dtype = obj if isinstance(obj, np.dtype) else obj.dtype
        return [path or '<root>'] if dtype.hasobject else []
    if depth > 50:
        return []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple, set)):
        items = enumerate(obj)
    elif isinstance(obj, argparse.Namespace):
        items = vars(obj).items()
    else:
        return []
    return [hit for k, v in items for hit in _object_arrays(v, f'{path}.{k}' if path else
                                                             str(k), depth + 1)]


def _contains_placeholder(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, SkippedObject):
        return True
    if depth > 50:
        return False
    if isinstance(obj, Mapping):
        return any(_contains_placeholder(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_contains_placeholder(v, depth + 1) for v in obj)
    return False


@contextmanager
def trusted_checkpoints(*locations: Optional[str], trust_all: bool = False) -> Iterator[None]:
    """Within the block, fully unpickle checkpoint files at or under ``locations`` (files or
    folders; ``None`` entries are ignored), or every file when ``trust_all`` is true."""
    global _trust_all
    saved = (list(_trusted_locations), _trust_all)
    _trusted_locations.extend(osp.realpath(osp.expanduser(p)) for p in locations if p)
    _trust_all = _trust_all or trust_all
    try:
        yield
    finally:
        _trusted_locations[:] = saved[0]
        _trust_all = saved[1]


def is_trusted(path: str) -> bool:
    """Whether ``path`` may be unpickled in full (see the module docstring)."""
    if _trust_all or os.environ.get(TRUST_ENV, '').lower() in ('1', 'true', 'yes'):
        return True
    real = osp.realpath(osp.expanduser(path))
    return any(real == loc or real.startswith(loc.rstrip(os.sep) + os.sep)
               for loc in _trusted_locations)


def _unsafe_globals(path: str) -> Optional[List[str]]:
    """The globals a weights-only load would reject, or None when torch cannot tell statically
    (torch < 2.5, or a legacy non-zip file)."""
    finder = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if finder is None:
        return None
    try:
        return finder(path)
    except (ValueError, RuntimeError):
        return None


def _safe_load(path: str, map_location) -> Any:
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5: no allow-list
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UntrustedCheckpointError(
                f'refusing to unpickle checkpoint {path}: {str(exc).splitlines()[0]}; '
                f'{TRUST_HINT}') from None
    unsafe = _unsafe_globals(path)
    plain = _plain_globals()
    plain_names = {name for _, name in plain}
    if unsafe is None:
        unsafe = list(TRAINING_STATE_GLOBALS)
    skipped = [g for g in unsafe if g in TRAINING_STATE_GLOBALS]
    refused = sorted(g for g in unsafe if g not in plain_names and g not in skipped)
    if refused:
        raise UntrustedCheckpointError(
            f'refusing to unpickle checkpoint {path}: it stores {", ".join(refused)}, which '
            'could run code on load (a safe load accepts tensors, plain containers, numpy '
            f'values and argparse.Namespace); {TRUST_HINT}')
    allowed = plain + [(_placeholder(name), name) for name in skipped]
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedCheckpointError(
            f'refusing to unpickle checkpoint {path}: {str(exc).splitlines()[0]}; '
            f'{TRUST_HINT}') from None
    objects = _object_arrays(ckpt)
    if objects:
        raise UntrustedCheckpointError(
            f'refusing to load checkpoint {path}: {", ".join(objects[:3])} holds numpy object '
            f'arrays (arbitrary Python objects, not plain data); {TRUST_HINT}')
    if skipped:
        outside = [k for k, v in ckpt.items() if k != TRAINING_STATE_KEY
                   and _contains_placeholder(v)] if isinstance(ckpt, Mapping) else ['<root>']
        if outside:
            raise UntrustedCheckpointError(
                f'refusing to load checkpoint {path}: its {", ".join(map(str, outside))} '
                f'stores {", ".join(skipped)} objects, which a safe load does not unpickle; '
                f'{TRUST_HINT}')
    return ckpt


def load_checkpoint_file(path: str, map_location=None, trusted: Optional[bool] = None) -> Any:
    """Load a local checkpoint file: safely unless it is trusted (see the module docstring).

    Args:
        path: the checkpoint file.
        map_location: as for :func:`torch.load`.
        trusted: force full unpickling (``True``) or a safe load (``False``); by default
            :func:`is_trusted` decides.
    """
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} can not be found.')
    if trusted is None:
        trusted = is_trusted(path)
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        return _safe_load(path, map_location)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, UntrustedCheckpointError):
            raise
        raise CorruptCheckpointError(
            f'checkpoint {path} is truncated or corrupt ({type(exc).__name__}: '
            f'{str(exc).splitlines()[0][:120]})') from None


def load_official_checkpoint(path: str) -> Mapping:
    """Load a third-party (official) checkpoint for a model converter, on the CPU, safely unless
    trusted (``MMVITREG_TRUST_CHECKPOINTS=1``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    return load_checkpoint_file(path, map_location='cpu')
