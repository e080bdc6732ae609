"""Every DHVT config builds and trains one iteration on tiny generated data."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmvitreg.testing.smoke import last_losses, smoke_train

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(REPO, 'configs/dhvt')


def _cfg(name: str) -> str:
    return osp.join(CFG, name)


@pytest.mark.parametrize('name,arch_dims', [
    ('dhvt-tiny-p4_2xb256-300e_cifar100.py', 192),
    ('dhvt-small-p4_2xb256-300e_cifar100.py', 384),
    ('dhvt-tiny-p16_2xb128-300e_in1k.py', 192),
    ('dhvt-small-p16_2xb128-300e_in1k.py', 384),
])
def test_classification_config_trains_one_iteration(tmp_path, name, arch_dims):
    cfg = Config.fromfile(_cfg(name))
    # the official recipe's pieces are in the config (the smoke run replaces sampler/schedule)
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert [h.type for h in cfg.custom_hooks] == ['EMAHook']
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.train_cfg.max_epochs == 300
    runner = smoke_train(_cfg(name), str(tmp_path))
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'DHVT' and backbone.embed_dims == arch_dims
    losses = last_losses(runner)
    assert torch.isfinite(torch.tensor(losses['loss']))


def test_dropkey_drloc_config_trains_one_iteration(tmp_path):
    # lambda is 0 at iteration 0 under the warm-up schedule: use the constant lambda to see it
    runner = smoke_train(_cfg('dhvt-tiny-p4_dropkey-drloc_2xb256-300e_cifar100.py'),
                         str(tmp_path), cfg_options={'model.drloc.weight_schedule': None})
    model = runner.model
    ratios = [layer.attn.dropkey.ratio for layer in model.backbone.layers]
    assert ratios[0] == pytest.approx(0.1) and ratios[-1] == pytest.approx(0.0)
    assert len(model.drloc_head) == 1
    losses = last_losses(runner)
    assert losses['loss_drloc'] > 0 and losses['loss'] > 0  # mmpretrain logs the CE as `loss`
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_retinanet_config_trains_one_iteration_on_non_square_images(tmp_path):
    runner = smoke_train(_cfg('retinanet_dhvt-small-p16_sfp_1x_coco.py'), str(tmp_path),
                         task='det', img_scale=(160, 96))
    model = runner.model
    assert type(model.backbone).__name__ == 'DHVT'
    with torch.no_grad():
        feats = model.neck(model.backbone.eval()(torch.zeros(1, 3, 96, 160)))
    assert model.backbone.patch_resolution == (6, 10)
    assert [tuple(f.shape[-2:]) for f in feats] == [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]
    losses = last_losses(runner)
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


@pytest.mark.parametrize('name', [
    'dhvt-tiny-p4_2xb256-300e_cifar100.py',
    'dhvt-small-p4_2xb256-300e_cifar100.py',
    'dhvt-tiny-p16_2xb128-300e_in1k.py',
    'dhvt-small-p16_2xb128-300e_in1k.py',
    'dhvt-tiny-p4_dropkey-drloc_2xb256-300e_cifar100.py',
])
def test_classifier_head_initialised_as_official(name):
    """Official DHVT (timm ``_init_vit_weights`` applied to every module): the classifier is
    trunc-normal std 0.02 with bias 0, like every other Linear (mmpretrain's
    VisionTransformerClsHead alone would zero it)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(_cfg(name))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    fc = model.head.layers.head
    assert fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # timm's trunc_normal_(std=.02) cuts at +-2 absolute (100 std), as mmengine's TruncNormal
    assert torch.count_nonzero(fc.bias) == 0
