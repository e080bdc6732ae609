"""``--resume`` is exact with DropKey and stochastic depth on (RNGStateHook + counter-based masks).

The digits demo config as shipped (drop path 0.1) plus DropKey ratio 0.3, iteration-based:
9 iterations straight vs 3 iterations, then ``--resume`` to 9. Without ``RNGStateHook`` the
resumed run's drop-path draws restart from mmengine's re-seeded generators and DropKey's call
counters from zero, so the same pair of runs differs (the slow control test).
"""
import os.path as osp

import pytest
import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, load_tool, run_main

CONFIG = '''
_base_ = {base!r}
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=9, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0, end=20),
]
model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                           dropkey=dict(ratio=0.3)))
randomness = dict(seed=7)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3, save_best=None,
                                     max_keep_ckpts=-1))
log_processor = dict(by_epoch=False)
custom_hooks = {hooks!r}
'''


def _config(tmp_path, name: str, hooks: list) -> str:
    path = tmp_path / f'{name}.py'
    path.write_text(CONFIG.format(base=DIGITS_CONFIG, hooks=hooks))
    return str(path)


def _train(config: str, work: str, max_iters: int, *extra: str) -> dict:
    run_main('train', [config, '--work-dir', work, *extra, '--cfg-options',
                       f'train_cfg.max_iters={max_iters}', *TINY_DIGITS_OPTIONS])
    return torch.load(osp.join(work, f'iter_{max_iters}.pth'), map_location='cpu',
                      weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a['state_dict'][k] - v).abs().max()) for k, v in b['state_dict'].items())


def test_resume_with_dropkey_and_drop_path_is_exact(tmp_path):
    # the config as a user writes it: tools/train.py adds RNGStateHook by default
    cfg = _config(tmp_path, 'as_shipped', [])
    full = _train(cfg, str(tmp_path / 'full'), 9)
    assert full['meta']['iter'] == 9
    part_dir = str(tmp_path / 'part')
    part3 = _train(cfg, part_dir, 3)
    assert len(part3['rng_state']['states']) == 1  # one rank's generators in the checkpoint
    resumed = _train(cfg, part_dir, 9, '--resume')
    assert resumed['meta']['iter'] == 9
    assert _max_diff(full, resumed) <= 1e-6
    assert _max_diff(full, part3) > 1e-4  # the weights did move over the last 6 iterations


@pytest.mark.slow
def test_control_without_the_hook_resume_diverges(tmp_path, monkeypatch):
    monkeypatch.setattr(load_tool('train'), 'add_rng_state_hook', lambda cfg: None)
    plain = _config(tmp_path, 'no_hook', [])
    full2 = _train(plain, str(tmp_path / 'full2'), 9)
    _train(plain, str(tmp_path / 'part2'), 3)
    resumed2 = _train(plain, str(tmp_path / 'part2'), 9, '--resume')
    assert _max_diff(full2, resumed2) > 1e-5
