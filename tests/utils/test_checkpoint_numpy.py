"""The safe loader's numpy allow-list admits numbers only: arrays of an object dtype (which hold
arbitrary Python objects rebuilt from the file) are refused in one line."""
import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

import mmvitreg  # noqa: F401  (installs the loader into mmengine)
from mmvitreg.utils.checkpoint import UntrustedCheckpointError, load_checkpoint_file

_multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray


class _ObjectArray:
    """Unpickles to ``np.ndarray(shape, dtype, buffer)`` through numpy's own reconstruction."""

    def __init__(self, dtype, items):
        self.dtype, self.items = dtype, items

    def __reduce__(self):
        return (_multiarray._reconstruct, (np.ndarray, (0,), b'b'),
                (1, (len(self.items),), self.dtype, False, self.items))


@pytest.mark.parametrize('dtype', [np.dtype('O'), np.dtype([('a', 'O')])])
def test_object_dtype_arrays_are_refused(tmp_path, dtype):
    items = [1, 'a'] if dtype.names is None else [(1,), ('a',)]
    path = str(tmp_path / 'object.pth')
    torch.save(dict(state_dict={}, meta=dict(x=_ObjectArray(dtype, items))), path)
    for load in (lambda: load_checkpoint_file(path),
                 lambda: _load_checkpoint(path, map_location='cpu')):
        with pytest.raises(UntrustedCheckpointError) as exc:
            load()
        assert len(str(exc.value).splitlines()) == 1


def test_numeric_arrays_still_load(tmp_path):
    path = str(tmp_path / 'plain.pth')
    rec = np.zeros(2, dtype=[('a', 'f4'), ('b', 'i8')])
    torch.save(dict(state_dict={}, meta=dict(x=np.arange(3), rec=rec, s=np.float32(2))), path)
    meta = load_checkpoint_file(path)['meta']
    assert meta['x'].tolist() == [0, 1, 2] and meta['rec'].dtype == rec.dtype
