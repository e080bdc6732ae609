"""The digit-scene presets learn: `tools/train.py PRESET`, shortened as `make demo` shortens it,
scores well above the untrained model's 0 on the test split (slow: ~2 + ~4 min on 2 cores, plus
~5 min once on a cold cache for the HOI preset's digits:// DETR)."""
import os.path as osp
import re

import pytest

from tests._helpers import REPO, run_tool


def _shorter(epochs: int) -> list:
    """The overrides configs/benchmark/suite_digits_cpu.py applies to fit `make demo`."""
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.end={epochs}', f'param_scheduler.1.T_max={epochs}',
            f'default_hooks.checkpoint.interval={epochs}']


@pytest.mark.slow
@pytest.mark.parametrize('preset, epochs, metric, floor', [
    # make demo measured 0.231..0.276 (2 epochs) and 0.288..0.329 (5 epochs from the digit DETR,
    # EMA) over 9 runs each
    ('digit_scenes_detection.py', 2, 'coco/bbox_mAP', 0.15),
    ('digit_scenes_hoi.py', 5, 'hico/mAP', 0.15),
])
def test_preset_baseline_learns(preset, epochs, metric, floor, tmp_path):
    # run where a user runs it: data generated on first use under ./data of the working folder
    res = run_tool([osp.join(REPO, 'tools', 'train.py'), osp.join(REPO, 'configs', 'benchmark',
                                                                   preset),
                    '--work-dir', str(tmp_path / 'work'), '--cfg-options', *_shorter(epochs)],
                   cwd=str(tmp_path), timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    scores = re.findall(re.escape(metric) + r': (-?[0-9.]+)', res.stdout + res.stderr)
    assert scores, 'no validation result in the log'
    assert float(scores[-1]) >= floor, f'{metric} {scores[-1]} after {epochs} epochs'
    assert osp.isdir(tmp_path / 'data' / ('digit_hoi' if 'hoi' in preset else 'digit_scenes'))
