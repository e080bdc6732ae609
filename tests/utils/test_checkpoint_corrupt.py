"""A truncated or corrupt checkpoint (e.g. a save killed midway) is one ValueError line, through
the loader mmengine uses (``load_from``, ``--resume``, ``tools/test.py``), safe or trusted."""
import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

import mmvitreg  # noqa: F401  (installs the loader into mmengine)
from mmvitreg.utils.checkpoint import (CorruptCheckpointError, UntrustedCheckpointError,
                                       trusted_checkpoints)


@pytest.mark.parametrize('trusted', [False, True])
@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_checkpoint_is_one_line(tmp_path, trusted, damage):
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict={'w': torch.ones(1000)}), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == 'truncated' else b'\x00garbage' * 50)
    # bytes that are no zip archive may be a legacy pickle: the safe loader refuses to unpickle it
    expected = UntrustedCheckpointError if (damage, trusted) == ('garbage', False) else \
        CorruptCheckpointError
    with trusted_checkpoints(trust_all=trusted), pytest.raises(expected) as exc:
        _load_checkpoint(str(path), map_location='cpu')
    assert isinstance(exc.value, ValueError) and len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize('trusted', [False, True])
@pytest.mark.parametrize('kind', ['protocol4', 'legacy_truncated'])
def test_protocol4_and_legacy_pickles_are_one_line(tmp_path, trusted, kind):
    """A raw protocol-4 pickle (not a torch file) or a truncated legacy torch file: one line."""
    import pickle
    path = tmp_path / 'epoch_1.pth'
    if kind == 'protocol4':
        with open(path, 'wb') as f:
            pickle.dump(dict(state_dict={'w': [1.0]}), f, protocol=4)
    else:
        torch.save(dict(state_dict={'w': torch.ones(100)}), path, pickle_protocol=4,
                   _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:200])
    with trusted_checkpoints(trust_all=trusted), pytest.raises(ValueError) as exc:
        _load_checkpoint(str(path), map_location='cpu')
    assert isinstance(exc.value, (CorruptCheckpointError, UntrustedCheckpointError))
    assert len(str(exc.value).splitlines()) == 1
