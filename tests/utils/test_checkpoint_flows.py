"""Checkpoint trust in the user's flows through tools/train.py and tools/test.py (in-process
``main(argv)``): own checkpoints and ``load_from`` work with the safe loader, ``--resume`` restores
the full state from the run's own work dir, anything else needs ``--trust-checkpoint``, and a
crafted checkpoint is refused with one line without running code."""
import argparse
import os
import os.path as osp
import pathlib

import pytest
import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, read_logs, run_main

EPOCHS = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=10']


class _SystemCall:

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _error_line(capsys, tool, args) -> str:
    with pytest.raises(SystemExit) as exc:
        run_main(tool, args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    return lines[0]


def _variant(digits_run, tmp_path, name, **meta) -> str:
    """The digits checkpoint with extra objects in its meta, written outside its work dir."""
    ckpt = torch.load(digits_run['checkpoint'], map_location='cpu', weights_only=False)
    ckpt['meta'].update(meta)
    path = str(tmp_path / name)
    torch.save(ckpt, path)
    return path


def test_crafted_checkpoint_refused_by_test_and_train(digits_run, tmp_path, capsys):
    marker = tmp_path / 'code_ran'
    evil = _variant(digits_run, tmp_path, 'evil.pth', x=_SystemCall(f'touch {marker}'))
    line = _error_line(capsys, 'test', [DIGITS_CONFIG, evil, '--work-dir', tmp_path / 't',
                                        '--cfg-options', *TINY_DIGITS_OPTIONS])
    assert 'UntrustedCheckpointError: refusing to unpickle checkpoint' in line
    assert 'posix.system' in line and '--trust-checkpoint' in line
    line = _error_line(capsys, 'train', [DIGITS_CONFIG, '--work-dir', tmp_path / 'w',
                                         '--cfg-options', f'load_from={evil}', *EPOCHS,
                                         *TINY_DIGITS_OPTIONS])
    assert 'refusing to unpickle checkpoint' in line
    cfg = tmp_path / 'pretrained.py'   # init_cfg=dict(type='Pretrained') of the backbone
    cfg.write_text(f"""_base_ = {DIGITS_CONFIG!r}
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint={evil!r},
                                         prefix='backbone.')))
""")
    line = _error_line(capsys, 'train', [cfg, '--work-dir', tmp_path / 'p', '--cfg-options',
                                         *EPOCHS, *TINY_DIGITS_OPTIONS])
    assert 'refusing to unpickle checkpoint' in line
    assert not marker.exists()


def test_test_tool_trust_flag(digits_run, tmp_path, capsys):
    """A checkpoint with a type outside the allow-list: refused by default, loaded when the
    user opts in with --trust-checkpoint."""
    path = _variant(digits_run, tmp_path, 'custom.pth',
                    args=argparse.Namespace(out=pathlib.PurePosixPath('/out')))
    args = [DIGITS_CONFIG, path, '--work-dir', tmp_path / 'test', '--cfg-options',
            *TINY_DIGITS_OPTIONS]
    line = _error_line(capsys, 'test', args)
    assert 'pathlib.PurePosixPath' in line
    run_main('test', [DIGITS_CONFIG, path, '--trust-checkpoint', *args[2:]])
    assert 'accuracy/top1' in read_logs(str(tmp_path / 'test'))


def test_load_from_a_full_mmengine_checkpoint(digits_run, tmp_path):
    """Fine-tuning from another run's checkpoint (optimizer, message hub inside) needs no opt-in:
    its weights and meta are loaded safely."""
    work = str(tmp_path / 'finetune')
    run_main('train', [DIGITS_CONFIG, '--work-dir', work, '--cfg-options',
                       f'load_from={digits_run["checkpoint"]}', 'train_cfg.max_epochs=1',
                       'train_cfg.val_interval=10', *TINY_DIGITS_OPTIONS])
    log = read_logs(work)
    assert f'Load checkpoint from {digits_run["checkpoint"]}' in log
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


def test_auto_resume_in_a_fresh_work_dir_starts_from_the_configs_load_from(digits_run,
                                                                          tmp_path):
    """`--resume` on a first launch (nothing to resume yet) keeps the config's load_from weights
    (mmengine's tools drop them and start from scratch); the relaunch then resumes its own
    checkpoint, not load_from."""
    work = str(tmp_path / 'auto')
    args = [DIGITS_CONFIG, '--work-dir', work, '--resume', '--cfg-options',
            f'load_from={digits_run["checkpoint"]}', 'train_cfg.val_interval=10',
            *TINY_DIGITS_OPTIONS]
    run_main('train', args + ['train_cfg.max_epochs=1'])
    log = read_logs(work)
    assert f'Load checkpoint from {digits_run["checkpoint"]}' in log
    assert 'resumed epoch' not in log and 'Resumed' not in log
    run_main('train', args + ['train_cfg.max_epochs=2'])
    log = read_logs(work)
    assert 'resumed epoch: 1' in log or 'Resumed' in log, log[-3000:]
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))


def test_resume_from_outside_the_work_dir_needs_trust(digits_run, tmp_path, capsys):
    work = str(tmp_path / 'resumed')
    args = [DIGITS_CONFIG, '--work-dir', work, '--resume', digits_run['checkpoint'],
            '--cfg-options', *EPOCHS, *TINY_DIGITS_OPTIONS]
    line = _error_line(capsys, 'train', args)
    assert "is outside this run's work dir" in line
    assert '--trust-checkpoint' in line and f'load_from={digits_run["checkpoint"]}' in line
    run_main('train', args + ['--trust-checkpoint'])
    log = read_logs(work)
    assert 'resumed epoch' in log or 'Resumed' in log
    assert 'just skip resuming it' not in log   # the message hub was restored in full
    assert torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)['meta']['epoch'] == 2
