"""tools/train.py and tools/test.py end to end on the digits config (CPU).

One real subprocess run of each tool (the user's command line: train, then test the checkpoint it
wrote); the other cases call ``main(argv)`` in-process.
"""
import glob
import os.path as osp
import pickle

import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, read_logs, run_main, run_tool


def test_train_then_test_in_subprocesses(tmp_path):
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

    # tested as written by train.py, with the default (safe) loader: no flag, no env var
    res = run_tool(['tools/test.py', DIGITS_CONFIG, ckpt, '--work-dir', str(tmp_path / 'test'),
                    '--cfg-options', *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'Load checkpoint from' in res.stdout + res.stderr
    assert 'accuracy/top1' in res.stdout + res.stderr
    assert glob.glob(osp.join(tmp_path, 'test', '*', '*.json'))  # the test metrics were logged


def test_test_tool_dumps_predictions(digits_run, tmp_path):
    out = tmp_path / 'preds.pkl'
    run_main('test', [DIGITS_CONFIG, digits_run['checkpoint'], '--work-dir', tmp_path / 'test',
                      '--out', out, '--cfg-options', *TINY_DIGITS_OPTIONS])
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 32 and 'pred_score' in preds[0]
    assert 'accuracy/top1' in read_logs(str(tmp_path / 'test'))


def test_amp_on_cpu_uses_bf16_autocast(tmp_path):
    run_main('train', [DIGITS_CONFIG, '--amp', '--work-dir', tmp_path, '--cfg-options',
                       'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                       'default_hooks.logger.interval=1', *TINY_DIGITS_OPTIONS])
    log = read_logs(str(tmp_path))
    assert 'AutocastOptimWrapper' in log
    losses = [line.split('loss:')[-1].split()[0] for line in log.splitlines()
              if 'Epoch(train)' in line and 'loss:' in line]
    assert losses and all(loss != 'nan' for loss in losses), losses
