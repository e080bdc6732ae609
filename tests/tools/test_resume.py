"""Resume is exact: interrupted after k iterations + --resume == one uninterrupted run.

Runs ``tools/train.py``'s ``main(argv)`` in-process (``_train``); add a case by writing a config
(like ``ITER_CONFIG``) and comparing the final checkpoints with ``_assert_same_weights``.
"""
import os.path as osp

import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, read_logs, run_main

# iteration-based so the interruption falls mid-epoch (64 images / batch 16 = 4 iters per epoch);
# the schedule has a fixed end so it does not depend on max_iters; no stochastic layers, no aug.
ITER_CONFIG = '''
_base_ = {base!r}
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=9, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0, end=20),
]
train_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')]))
model = dict(backbone=dict(drop_path_rate=0.0))
randomness = dict(seed=7)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3, save_best=None,
                                     max_keep_ckpts=-1))
log_processor = dict(by_epoch=False)
'''


def _train(config: str, work: str, max_iters: int, *extra: str) -> str:
    """Train (``extra``: e.g. ``--resume``) and return the run's log text."""
    run_main('train', [config, '--work-dir', work, *extra, '--cfg-options',
                       f'train_cfg.max_iters={max_iters}', *TINY_DIGITS_OPTIONS])
    return read_logs(work)


def _load(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def _assert_same_weights(a: dict, b: dict) -> None:
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=1e-5, atol=1e-6,
                                   msg=f'weights differ after resume: {key}')


def test_resume_is_exact(tmp_path):
    config = tmp_path / 'iter_digits.py'
    config.write_text(ITER_CONFIG.format(base=DIGITS_CONFIG))
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    _train(str(config), full, 9)
    _train(str(config), part, 3)   # "interrupted" after k=3 iterations (mid-epoch)
    log = _train(str(config), part, 9, '--resume')
    assert 'resumed epoch' in log or 'Resumed' in log
    # the run's own checkpoint is trusted: the message hub is restored, not skipped
    assert 'just skip resuming it' not in log
    a, b = _load(osp.join(full, 'iter_9.pth')), _load(osp.join(part, 'iter_9.pth'))
    assert a['meta']['iter'] == b['meta']['iter'] == 9
    _assert_same_weights(a, b)
    # and training did change the weights (the comparison is not vacuous)
    c = _load(osp.join(part, 'iter_3.pth'))
    assert any(not torch.allclose(c['state_dict'][k], v) for k, v in a['state_dict'].items())


def test_auto_resume_without_a_complete_checkpoint_refuses_in_one_line(tmp_path, capsys):
    """No last_checkpoint and only a damaged epoch_N.pth: one error line, never a fresh start."""
    import pytest
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'epoch_3.pth').write_bytes(b'PK\x03\x04' + b'\x00' * 64)  # a save killed midway
    with pytest.raises(SystemExit) as exc:
        run_main('train', [DIGITS_CONFIG, '--work-dir', str(work), '--resume', '--cfg-options',
                           'train_cfg.max_epochs=1', *TINY_DIGITS_OPTIONS])
    assert exc.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(err) == 1 and 'no complete checkpoint' in err[0] and 'epoch_3.pth' in err[0]
    assert sorted(p.name for p in work.iterdir()) == ['epoch_3.pth']  # nothing trained
