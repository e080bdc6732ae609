"""Safe checkpoint loading (mmvitreg.utils.checkpoint), the loader mmengine uses after
``import mmvitreg`` (``load_from``, ``init_cfg=Pretrained``, ``--resume``) and the converters' one.

Checkpoints are real ``torch.save`` files written by the tests; the crafted ones would run code
(create a marker file) if unpickled.
"""
import argparse
import builtins
import os
import pathlib

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint

import mmvitreg  # noqa: F401  (installs the loader into mmengine)
from mmvitreg.utils.checkpoint import (TRUST_ENV, SkippedObject, UntrustedCheckpointError,
                                       load_checkpoint_file, load_official_checkpoint,
                                       trusted_checkpoints)


class _SystemCall:
    """Unpickles to ``os.system(cmd)``."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _ExecCall:
    """Unpickles to ``exec(code)``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _mmengine_style(model: torch.nn.Module) -> dict:
    """What an mmengine runner writes: weights, meta with numpy values, a message hub."""
    buf = HistoryBuffer()
    buf.update(1.0)
    buf.update(0.5)
    return dict(state_dict=model.state_dict(),
                meta=dict(epoch=1, lr=np.float64(0.3), shape=np.arange(3), empty=np.zeros(0),
                          dataset_meta=dict(classes=('a', 'b'))),
                message_hub=dict(log_scalars={'train/loss': buf}, runtime_info=dict(iter=4),
                                 resumed_keys=dict(iter=True)),
                optimizer=dict(state={}, param_groups=[dict(lr=0.1, params=[0, 1])]))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'code_ran'
    yield path
    assert not path.exists(), 'unpickling ran code'


@pytest.mark.parametrize('where', ['state_dict', 'meta', 'message_hub'])
@pytest.mark.parametrize('payload', ['system', 'exec'])
def test_crafted_checkpoint_is_refused_without_running_code(tmp_path, marker, where, payload):
    evil = (_SystemCall(f'touch {marker}') if payload == 'system'
            else _ExecCall(f'open({str(marker)!r}, "w").close()'))
    ckpt = _mmengine_style(torch.nn.Linear(3, 2))
    ckpt[where]['x'] = evil
    path = str(tmp_path / 'evil.pth')
    torch.save(ckpt, path)
    for load in (lambda: load_checkpoint_file(path),
                 lambda: _load_checkpoint(path, map_location='cpu'),   # load_from / resume
                 lambda: load_official_checkpoint(path)):              # the converters
        with pytest.raises(UntrustedCheckpointError) as exc:
            load()
        msg = str(exc.value)
        assert len(msg.splitlines()) == 1
        assert f'refusing to unpickle checkpoint {path}' in msg
        assert ('posix.system' if payload == 'system' else 'builtins.exec') in msg
        assert '--trust-checkpoint' in msg and TRUST_ENV in msg


def test_mmengine_checkpoint_gives_weights_and_meta_safely(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(_mmengine_style(model), path)
    with pytest.raises(Exception):   # torch's own default refuses the message hub ...
        torch.load(path)
    ckpt = _load_checkpoint(path, map_location='cpu')   # ... our default loader does not
    assert ckpt['meta']['lr'] == 0.3 and isinstance(ckpt['meta']['lr'], np.float64)
    np.testing.assert_array_equal(ckpt['meta']['shape'], np.arange(3))
    assert ckpt['meta']['empty'].shape == (0,)
    assert ckpt['message_hub']['runtime_info'] == dict(iter=4)
    assert ckpt['optimizer']['param_groups'][0]['lr'] == 0.1
    # the training state is skipped, not unpickled; using it says why
    skipped = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(skipped, SkippedObject) and 'HistoryBuffer' in repr(skipped)
    with pytest.raises(UntrustedCheckpointError, match='was not unpickled'):
        skipped.current()
    other = torch.nn.Linear(3, 2)
    load_checkpoint(other, path, map_location='cpu')
    torch.testing.assert_close(other.weight, model.weight)


def test_training_state_objects_outside_the_message_hub_are_refused(tmp_path):
    buf = HistoryBuffer()
    buf.update(1.0)
    path = str(tmp_path / 'odd.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(2)), meta=dict(loss=buf)), path)
    with pytest.raises(UntrustedCheckpointError, match='its meta stores .*HistoryBuffer'):
        load_checkpoint_file(path)


def test_official_checkpoint_plain_types_are_allowed(tmp_path):
    """Official DeiT/DHVT/DeepViT files carry the training script's argparse Namespace."""
    path = str(tmp_path / 'official.pth')
    args = argparse.Namespace(model='dhvt_tiny', lr=np.float32(5e-4), input_size=224)
    torch.save(dict(model=dict(w=torch.ones(2)), args=args, epoch=299), path)
    ckpt = load_official_checkpoint(path)
    assert isinstance(ckpt['args'], argparse.Namespace) and ckpt['args'].model == 'dhvt_tiny'
    torch.testing.assert_close(ckpt['model']['w'], torch.ones(2))


def _needs_trust(tmp_path, name='custom.pth') -> str:
    """A benign checkpoint with a type outside the allow-list (a pathlib path in its args)."""
    path = str(tmp_path / name)
    torch.save(dict(state_dict=dict(w=torch.ones(2)),
                    args=argparse.Namespace(output_dir=pathlib.PurePosixPath('/out'))), path)
    return path


def test_opt_in_loads_everything(tmp_path, monkeypatch):
    path = _needs_trust(tmp_path)
    with pytest.raises(UntrustedCheckpointError, match='pathlib.PurePosixPath'):
        load_checkpoint_file(path)
    with trusted_checkpoints(trust_all=True):
        assert load_checkpoint_file(path)['args'].output_dir == pathlib.PurePosixPath('/out')
    with pytest.raises(UntrustedCheckpointError):   # the opt-in ended with the block
        load_checkpoint_file(path)
    monkeypatch.setenv(TRUST_ENV, '1')
    assert isinstance(_load_checkpoint(path)['args'].output_dir, pathlib.PurePosixPath)


def test_trusted_locations(tmp_path):
    (tmp_path / 'work').mkdir()
    (tmp_path / 'work2').mkdir()
    inside = _needs_trust(tmp_path / 'work')
    sibling = _needs_trust(tmp_path / 'work2')   # same prefix, other folder
    with trusted_checkpoints(str(tmp_path / 'work'), None):
        assert 'args' in load_checkpoint_file(inside)
        with pytest.raises(UntrustedCheckpointError):
            load_checkpoint_file(sibling)
    with trusted_checkpoints(inside):   # a single file
        assert 'args' in load_checkpoint_file(inside)
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint_file(inside)


def test_pretrained_init_cfg_uses_the_safe_loader(tmp_path, marker):
    source = torch.nn.Linear(3, 2)
    good = str(tmp_path / 'good.pth')
    torch.save(_mmengine_style(source), good)
    target = torch.nn.Linear(3, 2)
    PretrainedInit(checkpoint=good)(target)   # init_cfg=dict(type='Pretrained', checkpoint=...)
    torch.testing.assert_close(target.weight, source.weight)
    evil = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict=source.state_dict(), meta=_SystemCall(f'touch {marker}')), evil)
    with pytest.raises(UntrustedCheckpointError):
        PretrainedInit(checkpoint=evil)(torch.nn.Linear(3, 2))


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='can not be found'):
        load_checkpoint_file(str(tmp_path / 'none.pth'))
