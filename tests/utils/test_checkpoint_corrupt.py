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
