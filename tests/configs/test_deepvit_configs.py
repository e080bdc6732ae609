"""Every DeepViT / ViT +- Re-attention config builds and trains one iteration on tiny data, and
the ImageNet configs equal the official yamls (zhoudaquan/dvit_repo scripts/*.yaml)."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

from mmvitreg.regularizers.reattention import reattention_layer_indices
from mmvitreg.testing import last_losses, smoke_train
from tests._helpers import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/deepvit/*.py')))
EXPECTED_REATTENTION = {
    'deepvit-s_8xb32_in1k.py': list(range(11, 16)),
    'deepvit-l_8xb32_in1k.py': list(range(20, 32)),
    'deepvit-16_8xb32_in1k.py': list(range(16)),
    'deepvit-24_8xb32_in1k.py': list(range(24)),
    'deepvit-32_8xb32_in1k.py': list(range(32)),
    'vit-16_8xb32_in1k.py': [],
    'vit-24_8xb32_in1k.py': [],
    'vit-32_8xb32_in1k.py': [],
    'vit-16-p4_1xb128-200e_cifar100.py': [],
    'vit-16-p4-reattention_1xb128-200e_cifar100.py': list(range(16)),
    'deepvit-s-p4_1xb128-200e_cifar100.py': list(range(11, 16)),
}


def test_all_configs_are_listed():
    assert sorted(osp.basename(c) for c in CONFIGS) == sorted(EXPECTED_REATTENTION)


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_trains_one_iteration(config, tmp_path):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports['imports'] == ['mmvitreg']
    # ImageNet configs run on 64x64 inputs here (position embeddings are resized on the fly)
    img_scale = (64, 64) if 'in1k' in config else None
    options = None
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':  # fp16 AMP needs a GPU
        options = {'optim_wrapper.type': 'AutocastOptimWrapper'}
    runner = smoke_train(config, str(tmp_path), img_scale=img_scale, cfg_options=options)
    losses = last_losses(runner)
    assert 'loss' in losses and losses['loss'] == losses['loss']  # finite, not NaN
    model = runner.model
    assert reattention_layer_indices(model) == EXPECTED_REATTENTION[osp.basename(config)]


IN1K = {osp.basename(c): c for c in CONFIGS if 'in1k' in c}
# official yaml values: (drop_path, mixup, cutmix, amp, cos_reg_component)
OFFICIAL = {
    'deepvit-s_8xb32_in1k.py': (0.2, 0.8, 1.0, False, 0),  # DeepViT_S_CNN_patch.yaml
    'deepvit-l_8xb32_in1k.py': (0.2, 0.8, 1.0, False, 0),  # DeepViT_L_CNN_patch.yaml
    'deepvit-24_8xb32_in1k.py': (0.2, 0.8, 1.0, False, 0),  # DeepViT_24B_pure_transformer.yaml
    'deepvit-32_8xb32_in1k.py': (0.2, 0.1, 0.0, True, 12),  # DeepViT_32B_pure_transformer.yaml
    'deepvit-16_8xb32_in1k.py': (0.2, 0.8, 1.0, False, 0),  # no yaml: the shared recipe
}


def _recipe(cfg):
    augments = {a['type']: a['alpha'] for a in cfg.model.train_cfg.augments}
    cos = cfg.model.get('attention_cosine')
    return (cfg.model.backbone.drop_path_rate, augments.get('Mixup', 0.0),
            augments.get('CutMix', 0.0), cfg.optim_wrapper.get('type') == 'AmpOptimWrapper',
            cos['component'] if cos else 0)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_in1k_configs_equal_their_official_yaml(name):
    cfg = Config.fromfile(IN1K[name])
    assert _recipe(cfg) == OFFICIAL[name]
    assert cfg.train_dataloader.batch_size * 8 == 256 and cfg.optim_wrapper.optimizer.lr == 5e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.get('clip_grad') is None  # clip_grad: null
    assert cfg.train_cfg.max_epochs == 310  # epochs 300 + cooldown_epochs 10
    assert cfg.test_pipeline[1]['scale'] == 248  # crop_pct 0.9
    if OFFICIAL[name][4]:
        assert cfg.model.type == 'Regularized' and cfg.model.host == 'ImageClassifier'
        assert cfg.model.attention_cosine == dict(weight=0.1, component=12)


def test_vit_baselines_share_the_deepvit_recipe():
    for depth in (16, 24, 32):
        vit = Config.fromfile(IN1K[f'vit-{depth}_8xb32_in1k.py'])
        deep = Config.fromfile(IN1K[f'deepvit-{depth}_8xb32_in1k.py'])
        assert _recipe(vit) == _recipe(deep)
        assert vit.model.backbone.reattention is False


def _official_timm_lr(epoch, base=5e-4, warmup_lr=1e-6, min_lr=1e-5):
    """Bundled timm CosineLRScheduler(t_initial=300, warmup_t=5, cycle_limit=1,
    t_in_epochs=True, warmup_prefix=False), stepped per epoch; 10 cool-down epochs follow."""
    if epoch < 5:
        return warmup_lr + epoch * (base - warmup_lr) / 5
    if epoch >= 300:
        return min_lr
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * epoch / 300))


def test_in1k_lr_schedule_is_the_official_per_epoch_timm_cosine():
    cfg = Config.fromfile(IN1K['deepvit-s_8xb32_in1k.py'])
    optim = OptimWrapper(torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=5e-4))
    scheds = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=optim, epoch_length=7))
              for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        lrs.append(optim.get_lr()['lr'][0])
        optim.step()
        for sched in scheds:
            sched.step()
    assert lrs == pytest.approx([_official_timm_lr(e) for e in range(310)], rel=1e-9)
