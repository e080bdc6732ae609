"""configs/drloc: parse, pair with their baselines, and train one iteration on tiny data."""
import copy
import glob
import os.path as osp

import pytest
from mmengine.config import Config

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.drloc_head import _TAP_KEYS, DRLocHead
from mmvitreg.testing import last_losses, smoke_train

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs/drloc')
DRLOC_CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, '*_drloc_*.py')))
DEIT = osp.join(CFG_DIR, 'deit-small_drloc_8xb128-100e_cifar100-224px.py')
SWIN = osp.join(CFG_DIR, 'swin-tiny_drloc_8xb128-100e_cifar100-224px.py')
RETINA = osp.join(CFG_DIR, 'retinanet_r50_fpn_drloc_1x_coco.py')
# DeiT-Tiny instead of DeiT-Small keeps the config's structure but makes the CPU test fast.
DEIT_TINY = {'model.backbone.arch': 'deit-tiny', 'model.head.in_channels': 192}


def baseline_of(path):
    return path.replace('_drloc_', '_')


def test_every_drloc_config_has_a_baseline_and_differs_only_by_drloc():
    assert len(DRLOC_CONFIGS) == 5
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
        head_args = {k: v for k, v in drloc.items() if k not in _TAP_KEYS}
        head = DRLocHead(in_channels=8, **head_args)  # every DRLoc key is a valid argument
        assert head.num_pairs == 64 and head.variant == 'l1'


def test_paper_settings():
    deit, swin, retina = (Config.fromfile(p) for p in (DEIT, SWIN, RETINA))
    assert deit.model.drloc.loss_weight == 0.1 and deit.model.drloc.pool_size == 7
    assert swin.model.drloc.loss_weight == 0.5
    for cfg in (deit, swin):
        assert cfg.train_cfg.max_epochs == 100
        assert cfg.model.drloc.weight_schedule == dict(type='warmup_decay', warmup=20,
                                                       by_epoch=True)
        assert any(t['type'] == 'RandomResizedCrop' and t['scale'] == 224
                   for t in cfg.train_dataloader.dataset.pipeline)
        assert cfg.model.backbone.get('init_cfg') is None  # from scratch
    assert Config.fromfile(DEIT.replace('cifar100', 'cifar10')).model.head.num_classes == 10
    assert retina.model.host == 'RetinaNet' and retina.model.drloc.pool_size is None


def test_deit_config_trains_one_iteration(tmp_path):
    options = dict(DEIT_TINY)
    options['model.drloc.weight_schedule'] = None  # official schedule gives lambda = 0 at epoch 0
    runner = smoke_train(DEIT, str(tmp_path), cfg_options=options, img_scale=(64, 64))
    losses = last_losses(runner)
    assert losses['loss_drloc'] > 0
    assert type(runner.model).__name__ == 'DRLocMixin_ImageClassifier'


def test_deit_config_official_schedule_starts_at_zero(tmp_path):
    runner = smoke_train(DEIT, str(tmp_path), cfg_options=dict(DEIT_TINY), img_scale=(64, 64))
    assert last_losses(runner)['loss_drloc'] == 0.0  # epoch 0 of the warm-up


def test_swin_config_trains_one_iteration(tmp_path):
    options = {'model.backbone.pad_small_map': True, 'model.drloc.weight_schedule': None}
    runner = smoke_train(SWIN, str(tmp_path), cfg_options=options, img_scale=(64, 64))
    assert last_losses(runner)['loss_drloc'] > 0
    assert [h.in_channels for h in runner.model.drloc_head] == [768]


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
