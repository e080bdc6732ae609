"""configs/drloc: parse, pair with their baselines, match the official loop, train on tiny data."""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.drloc_head import DRLocHead
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.drloc import TAP_KEYS
from mmvitreg.testing import last_losses, smoke_train

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs/drloc')
DRLOC_CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, '*_drloc*.py')))
DEIT = osp.join(CFG_DIR, 'deit-small_drloc_8xb128-100e_cifar100-224px.py')
SWIN = osp.join(CFG_DIR, 'swin-tiny_drloc_8xb128-100e_cifar100-224px.py')
SWIN_ALL = osp.join(CFG_DIR, 'swin-tiny_drloc-all-layers_8xb128-100e_cifar100-224px.py')
RETINA = osp.join(CFG_DIR, 'retinanet_r50_fpn_drloc_1x_coco.py')
CLASSIFIERS = [p for p in DRLOC_CONFIGS if 'retinanet' not in p]
# DeiT-Tiny instead of DeiT-Small keeps the config's structure but makes the CPU test fast.
DEIT_TINY = {'model.backbone.arch': 'deit-tiny', 'model.head.in_channels': 192}
SWIN_STAGES = ['backbone.stages.0.downsample', 'backbone.stages.1.downsample',
               'backbone.stages.2.downsample', 'backbone.stages.3']


def baseline_of(path):
    return path.replace('_drloc-all-layers_', '_').replace('_drloc_', '_')


def test_every_drloc_config_has_a_baseline_and_differs_only_by_drloc():
    assert len(DRLOC_CONFIGS) == 7
    for path in DRLOC_CONFIGS:
        cfg, base = Config.fromfile(path), Config.fromfile(baseline_of(path))
        assert cfg.custom_imports.imports == ['mmvitreg']
        model = copy.deepcopy(cfg.model.to_dict())
        drloc = model.pop('drloc')
        assert model.pop('type') == 'Regularized' and model.pop('host') == base.model.type
        base_model = base.model.to_dict()
        base_model.pop('type')
        assert model == base_model, path
        for key in ('train_cfg', 'optim_wrapper', 'param_scheduler', 'train_dataloader'):
            assert cfg[key] == base[key], (path, key)
        head_args = {k: v for k, v in drloc.items() if k not in TAP_KEYS}
        head = DRLocHead(in_channels=8, **head_args)  # every DRLoc key is a valid argument
        assert head.num_pairs == 64 and head.variant == 'l1' and head.use_abs


def test_paper_settings():
    deit, swin, swin_all, retina = (Config.fromfile(p) for p in (DEIT, SWIN, SWIN_ALL, RETINA))
    assert deit.model.drloc.loss_weight == 0.1 and deit.model.drloc.pool_size == 7
    assert swin.model.drloc.loss_weight == swin_all.model.drloc.loss_weight == 0.5
    # official taps: the last stage before the final norm; all layers after each patch merging
    assert swin.model.drloc.source == 'backbone.stages.3' and swin.model.drloc.in_channels == 768
    assert swin_all.model.drloc.source == SWIN_STAGES
    assert swin_all.model.drloc.in_channels == [192, 384, 768, 768]
    for cfg in (deit, swin, swin_all):
        assert cfg.train_cfg.max_epochs == 101  # official: for epoch in range(0, 101)
        assert cfg.model.drloc.weight_schedule == dict(type='warmup_decay', warmup=20,
                                                       total=300, by_epoch=True)
        assert any(t['type'] == 'RandomResizedCrop' and t['scale'] == 224
                   for t in cfg.train_dataloader.dataset.pipeline)
        assert cfg.model.backbone.get('init_cfg') is None  # from scratch
    assert swin.model.backbone.drop_path_rate == 0.2  # official swin_tiny yaml
    assert Config.fromfile(DEIT.replace('cifar100', 'cifar10')).model.head.num_classes == 10
    assert retina.model.host == 'RetinaNet' and retina.model.drloc.pool_size is None


def _official_lr(k, iters_per_epoch, base=1e-3, warmup_lr=1e-6, min_lr=1e-5):
    """Official lr_scheduler.py: timm CosineLRScheduler(t_initial=300 epochs, warmup_t=20
    epochs, warmup_prefix=False, t_in_epochs=False) at update k (batch 128 x 8 GPUs: the
    official linear scaling 5e-4 * 1024 / 512 = 1e-3, 5e-7 -> 1e-6, 5e-6 -> 1e-5)."""
    total, warmup = 300 * iters_per_epoch, 20 * iters_per_epoch
    if k < warmup:
        return warmup_lr + k * (base - warmup_lr) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * k / total))


@pytest.mark.parametrize('path', [DEIT, SWIN], ids=['deit', 'swin'])
def test_lr_schedule_is_the_official_cut_300_epoch_cosine(path):
    cfg = Config.fromfile(path)
    iters_per_epoch = 3
    optim = OptimWrapper(torch.optim.AdamW(nn.Linear(2, 2).parameters(),
                                           lr=cfg.optim_wrapper.optimizer.lr))
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-3)  # 5e-4 * 1024 / 512
    scheds = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(
        optimizer=optim, epoch_length=iters_per_epoch)) for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * iters_per_epoch):
        lrs.append(optim.get_lr()['lr'][0])
        optim.step()
        for sched in scheds:
            sched.step()
    warmup = 20 * iters_per_epoch
    expected = [_official_lr(k, iters_per_epoch) for k in range(len(lrs))]
    assert lrs[warmup:] == pytest.approx(expected[warmup:], rel=1e-9)  # the cosine: exact
    # warm-up: mmengine's LinearLR reaches the base rate at iteration W - 1, timm's at W
    # (a 1/W difference per step, documented in docs/recipes/drloc.md)
    assert lrs[:warmup] == pytest.approx(
        [1e-6 + k * (1e-3 - 1e-6) / (warmup - 1) for k in range(warmup)], rel=1e-9)
    assert lrs[20 * iters_per_epoch] < 1e-3  # the cosine clock started at 0, not at warm-up end
    # cut at epoch 101 of 300: the last update (k = 302 of 900) still runs at ~0.75e-3
    assert lrs[-1] == pytest.approx(1e-5 + 0.99e-3 * (1 + math.cos(math.pi * 302 / 900)) / 2)
    assert lrs[-1] > 0.74e-3


def test_swin_all_layers_taps_official_grids_and_channels():
    """At 224 px the four heads see 28/14/7/7 grids with 192/384/768/768 channels."""
    cfg = Config.fromfile(SWIN_ALL)
    cfg.model.drloc.update(variant='ce', out_dim=[56, 28, 14, 7])  # official per-stage bins
    cfg.model.drloc.weight_schedule = None  # outside a runner (no loop progress to follow)
    model = MODELS.build(cfg.model)
    heads = model.drloc_head
    assert [h.in_channels for h in heads] == [192, 384, 768, 768]
    assert [h.row_fc.out_features for h in heads] == [56, 28, 14, 7]  # --use_abs bins
    seen = []
    for head in heads:
        head.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[1:])))
    from mmpretrain.structures import DataSample
    model.train()
    losses = model.loss(torch.randn(1, 3, 224, 224), [DataSample().set_gt_label(3)])
    assert seen == [(192, 28, 28), (384, 14, 14), (768, 7, 7), (768, 7, 7)]
    assert torch.isfinite(losses['loss_drloc'])


def test_deit_config_trains_one_iteration(tmp_path):
    options = dict(DEIT_TINY)
    options['model.drloc.weight_schedule'] = None  # epoch schedule refuses a 1-epoch loop
    runner = smoke_train(DEIT, str(tmp_path), cfg_options=options, img_scale=(64, 64))
    losses = last_losses(runner)
    assert losses['loss_drloc'] > 0
    assert hasattr(runner.model, 'drloc_head')


@pytest.mark.parametrize('path', [SWIN, SWIN_ALL], ids=['last-stage', 'all-layers'])
def test_swin_configs_train_one_iteration(tmp_path, path):
    options = {'model.backbone.pad_small_map': True, 'model.drloc.weight_schedule': None}
    runner = smoke_train(path, str(tmp_path), cfg_options=options, img_scale=(64, 64))
    assert last_losses(runner)['loss_drloc'] > 0
    expected = [768] if path == SWIN else [192, 384, 768, 768]
    assert [h.in_channels for h in runner.model.drloc_head] == expected


def test_retinanet_config_trains_and_drloc_grads_reach_backbone(tmp_path):
    runner = smoke_train(RETINA, str(tmp_path), task='det', img_scale=(160, 128))
    assert last_losses(runner)['loss_drloc'] > 0
    model = runner.model
    data = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
    model.zero_grad()
    losses = model.loss(data['inputs'], data['data_samples'])
    assert set(losses) >= {'loss_cls', 'loss_bbox', 'loss_drloc'}
    losses['loss_drloc'].backward()
    assert model.backbone.layer4[-1].conv3.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.bbox_head.parameters())


@pytest.mark.slow
@pytest.mark.parametrize('path', [DEIT, SWIN])
def test_full_size_classifiers_one_iteration(tmp_path, path):
    runner = smoke_train(path, str(tmp_path), cfg_options={'model.drloc.weight_schedule': None})
    assert last_losses(runner)['loss_drloc'] > 0
