"""Resume is exact: interrupted after k iterations + --resume == one uninterrupted run."""
import os.path as osp

import torch

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, run_tool

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


def _train(config: str, work: str, max_iters: int, resume: bool = False):
    args = ['tools/train.py', config, '--work-dir', work]
    if resume:
        args.append('--resume')
    res = run_tool(args + ['--cfg-options', f'train_cfg.max_iters={max_iters}',
                           *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_resume_is_exact(tmp_path):
    config = tmp_path / 'iter_digits.py'
    config.write_text(ITER_CONFIG.format(base=DIGITS_CONFIG))
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    _train(str(config), full, max_iters=9)
    _train(str(config), part, max_iters=3)   # "interrupted" after k=3 iterations (mid-epoch)
    res = _train(str(config), part, max_iters=9, resume=True)
    assert 'resumed epoch' in res.stdout + res.stderr or 'Resumed' in res.stdout + res.stderr
    a = torch.load(osp.join(full, 'iter_9.pth'), map_location='cpu', weights_only=False)
    b = torch.load(osp.join(part, 'iter_9.pth'), map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 9
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=1e-5, atol=1e-6,
                                   msg=f'weights differ after resume: {key}')
    # and training did change the weights (the comparison is not vacuous)
    c = torch.load(osp.join(part, 'iter_3.pth'), map_location='cpu', weights_only=False)
    assert any(not torch.allclose(c['state_dict'][k], v) for k, v in a['state_dict'].items())
