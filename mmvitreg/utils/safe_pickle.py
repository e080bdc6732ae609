"""Safe loading of plain pickle files (``tools/test.py --out`` prediction dumps).

``pickle.load`` of a received file can run code. :func:`load_pickle_file` unpickles only plain
containers, tensors (rebuilt with torch's weights-only loader), numeric numpy values and
``argparse.Namespace`` — the allow-list of :mod:`mmvitreg.utils.checkpoint` — and refuses anything
else in one line. Trusted files (the same rule as checkpoints: ``MMVITREG_TRUST_CHECKPOINTS=1``,
:func:`~mmvitreg.utils.checkpoint.trusted_checkpoints`, or ``trusted=True``) are unpickled in full.
"""
import collections
import io
import pickle
from typing import Any, Dict, Optional

import numpy as np
import torch

from .checkpoint import TRUST_ENV, UntrustedCheckpointError, _plain_globals, is_trusted


def _tensor_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` (how ``pickle`` stores tensors), weights only."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (numpy arrays): latin-1 only."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'_codecs.encode with encoding {encoding!r} is not allowed')
    return text.encode('latin-1')


def _numpy_frombuffer(buf: Any, dtype: Any, shape: tuple, order: str) -> np.ndarray:
    """numpy's protocol-5 array reconstruction, numeric dtypes only (no object memory)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f'numpy array of dtype {dtype} is not allowed')
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _allowed() -> Dict[str, Any]:
    allowed = {name: obj for obj, name in _plain_globals()}
    allowed.update({
        'torch.storage._load_from_bytes': _tensor_from_bytes,
        '_codecs.encode': _latin1_encode,
        'numpy._core.numeric._frombuffer': _numpy_frombuffer,
        'numpy.core.numeric._frombuffer': _numpy_frombuffer,
        'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
        'collections.OrderedDict': collections.OrderedDict,
        'builtins.set': set, 'builtins.frozenset': frozenset, 'builtins.slice': slice,
    })
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed().get(f'{module}.{name}')
        if obj is None:
            raise pickle.UnpicklingError(f'{module}.{name} is not allowed')
        return obj


def load_pickle_file(path: str, trusted: Optional[bool] = None) -> Any:
    """Unpickle ``path`` safely unless it is trusted (see the module docstring)."""
    with open(path, 'rb') as f:
        if trusted or (trusted is None and is_trusted(path)):
            return pickle.load(f)
        try:
            return SafeUnpickler(f).load()
        except (pickle.UnpicklingError, RuntimeError) as exc:
            raise UntrustedCheckpointError(
                f'refusing to unpickle {path}: {str(exc).splitlines()[0]} (a safe load accepts '
                'plain containers, tensors and numeric numpy values); if you trust this file, '
                f'pass --trust-file or set {TRUST_ENV}=1') from None
