"""tools/train.py and tools/test.py end to end on the digits config (CPU)."""
import glob
import os.path as osp

import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, run_tool


def test_train_then_test(tmp_path):
    work = str(tmp_path / 'work')
    res = run_tool(['tools/train.py', DIGITS_CONFIG, '--work-dir', work, '--cfg-options',
                    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'Epoch(val) [1]' in res.stdout + res.stderr
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    # a resumable mmengine checkpoint: weights, optimizer and message hub
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert {'state_dict', 'optimizer', 'message_hub'} <= set(state)

    res = run_tool(['tools/test.py', DIGITS_CONFIG, ckpt, '--work-dir', work, '--cfg-options',
                    *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'Load checkpoint from' in res.stdout + res.stderr
    assert 'accuracy/top1' in res.stdout + res.stderr
    assert glob.glob(osp.join(work, '*', '*.json'))  # the test metrics were logged


def test_amp_on_cpu_uses_bf16_autocast(tmp_path):
    res = run_tool(['tools/train.py', DIGITS_CONFIG, '--amp', '--work-dir', str(tmp_path),
                    '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                    *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "type='AutocastOptimWrapper'" in log or 'AutocastOptimWrapper' in log
    assert 'loss:' in log and 'nan' not in log.split('loss:')[-1][:20]
