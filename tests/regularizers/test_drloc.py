"""The ``drloc`` key: DRLoc heads attached to classifiers and detectors, adding ``loss_drloc`` to
their ``loss`` (tiny models, CPU)."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint, save_checkpoint
from mmpretrain.structures import DataSample

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import apply_regularizers
from mmvitreg.regularizers.drloc import tokens_to_map

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_VIT = dict(type='VisionTransformer', arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                                    feedforward_channels=64),
                img_size=32, patch_size=4)


def vit_classifier(drloc=None, backbone=None, head_type='VisionTransformerClsHead'):
    cfg = dict(type='ImageClassifier', backbone=backbone or dict(TINY_VIT), neck=None,
               head=dict(type=head_type, num_classes=5, in_channels=32))
    if drloc is not None:
        cfg = dict(cfg, type='Regularized', host='ImageClassifier', drloc=drloc)
    return MODELS.build(cfg)


def samples(n):
    return [DataSample().set_gt_label(i % 5) for i in range(n)]


def taps(model):
    """``[(source path, tuple index), ...]`` of the model's DRLoc heads."""
    return list(zip(model.drloc_head.paths, model.drloc_head.indices))


def test_token_map_drops_extra_tokens():
    tokens = torch.randn(2, 2 + 3 * 4, 5)  # two extra tokens (class + distillation)
    fmap = tokens_to_map(tokens, -1, (3, 4), 2, 'x')
    assert fmap.shape == (2, 5, 3, 4)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 2 + 1 * 4 + 2])
    with pytest.raises(ValueError, match='fewer than the 4x4 patch grid'):
        tokens_to_map(tokens, -1, (4, 4), 2, 'x')
    # without a grid the patches must form a square after the extra tokens
    assert tokens_to_map(torch.randn(2, 1 + 9, 5), -1, None, 1, 'x').shape == (2, 5, 3, 3)
    with pytest.raises(ValueError, match='set drloc.grid_source'):
        tokens_to_map(torch.randn(2, 1 + 12, 5), -1, None, 1, 'x')


def test_vit_classifier_loss_grads_and_untouched_predict():
    model = vit_classifier(drloc=dict(num_pairs=8, loss_weight=0.1, pool_size=4))
    assert taps(model) == [('backbone.ln1', -1)]
    assert len(model.drloc_head) == 1 and model.drloc_head[0].in_channels == 32
    x = torch.randn(2, 3, 32, 48)  # non-square input -> 8x12 token grid
    losses = model.loss(x, samples(2))
    assert set(losses) == {'loss', 'loss_drloc'} and losses['loss_drloc'].item() > 0
    losses['loss_drloc'].backward()  # DRLoc loss alone reaches the backbone
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert model.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.layers.head.weight.grad is None  # ... but not the classifier head
    # inference ignores the DRLoc head: same predictions as the plain model with the same weights
    plain = vit_classifier()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith('drloc_head.') for k in unexpected) and unexpected
    model.eval(), plain.eval()
    with torch.no_grad():
        a = model.predict(x)[0].pred_score
        b = plain.predict(x)[0].pred_score
    assert torch.equal(a, b)


def test_distilled_vit_tokens():
    backbone = dict(TINY_VIT, type='DistilledVisionTransformer')
    model = vit_classifier(drloc=dict(num_pairs=4), backbone=backbone, head_type='DeiTClsHead')
    assert model.backbone.num_extra_tokens == 2
    losses = model.loss(torch.randn(2, 3, 32, 32), samples(2))
    assert torch.isfinite(losses['loss_drloc'])


def test_vit_all_layers_and_explicit_sources():
    model = vit_classifier(drloc=dict(num_pairs=4, all_layers=True, variant='ce', pool_size=4))
    assert [p for p, _ in taps(model)] == ['backbone.layers.0', 'backbone.layers.1']
    assert len(model.drloc_head) == 2
    losses = model.loss(torch.randn(2, 3, 32, 32), samples(2))
    losses['loss_drloc'].backward()
    assert all(p.grad is not None for h in model.drloc_head for p in h.parameters())
    model = vit_classifier(drloc=dict(source='backbone.layers.0', num_pairs=4, in_channels=32))
    assert taps(model) == [('backbone.layers.0', -1)]
    assert torch.isfinite(model.loss(torch.randn(1, 3, 32, 32), samples(1))['loss_drloc'])


def test_swin_maps_and_all_stages():
    backbone = dict(type='SwinTransformer', arch=dict(embed_dims=16, depths=[1, 1, 1, 1],
                                                      num_heads=[1, 1, 1, 1]),
                    img_size=64, window_size=2, out_indices=(0, 1, 2, 3))
    cfg = dict(type='Regularized', host='ImageClassifier', backbone=backbone,
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=5, in_channels=128),
               drloc=dict(num_pairs=4, all_layers=True, variant='gaussian', pool_size=4))
    model = MODELS.build(cfg)
    assert taps(model) == [('backbone', i) for i in range(4)]
    assert [h.in_channels for h in model.drloc_head] == [16, 32, 64, 128]
    x = torch.randn(2, 3, 64, 96)
    losses = model.loss(x, samples(2))
    losses['loss_drloc'].backward()
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0


def test_checkpoint_roundtrip_and_strip(tmp_path):
    model = vit_classifier(drloc=dict(num_pairs=4))
    ckpt = str(tmp_path / 'drloc.pth')
    save_checkpoint(model.state_dict(), ckpt)
    plain = vit_classifier()
    load_checkpoint(plain, ckpt, map_location='cpu', strict=False)  # mmengine default: non-strict
    assert torch.equal(plain.backbone.pos_embed, model.backbone.pos_embed)
    with pytest.raises(RuntimeError, match='drloc_head'):
        load_checkpoint(vit_classifier(), ckpt, map_location='cpu', strict=True)

    spec = importlib.util.spec_from_file_location(
        'strip_drloc', osp.join(REPO, 'tools/model_converters/strip_drloc.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    deploy = str(tmp_path / 'deploy.pth')
    tool.main([ckpt, deploy])
    stripped = vit_classifier()
    load_checkpoint(stripped, deploy, map_location='cpu', strict=True)
    assert torch.equal(stripped.head.layers.head.weight, model.head.layers.head.weight)
    with pytest.raises(SystemExit):
        tool.main([deploy, str(tmp_path / 'again.pth')])  # nothing left to strip
    with pytest.raises(ValueError, match='has no drloc_head'):
        tool.strip_checkpoint(deploy, str(tmp_path / 'again.pth'))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        tool.strip_checkpoint(str(tmp_path / 'missing.pth'), deploy)


@pytest.mark.parametrize('drloc', [
    dict(source='layers.1', in_channels=32),
    dict(),
])
def test_drloc_on_a_host_without_loss(drloc):
    """DRLoc on a backbone (no ``loss``) says it needs a model with ``loss``."""
    with pytest.raises(ValueError, match=r'adds a loss and needs a model with loss\(inputs'):
        MODELS.build(dict(type='Regularized', host='VisionTransformer', drloc=drloc,
                          **{k: v for k, v in TINY_VIT.items() if k != 'type'}))


def test_regularizer_bad_config():
    with pytest.raises(ValueError, match="source 'backbone.nope' is not a submodule"):
        vit_classifier(drloc=dict(source='backbone.nope'))
    with pytest.raises(ValueError, match=r'num_pairs must be an integer in \[1, 4096\]'):
        vit_classifier(drloc=dict(num_pairs=0))
    with pytest.raises(ValueError, match='in_channels must be one int or one per source'):
        vit_classifier(drloc=dict(all_layers=True, in_channels=[32]))


class _TinyDetector(nn.Module):
    """Stands in for a detector: ``loss(inputs, data_samples)`` with a conv backbone."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1))

    def extract_feat(self, x):
        return (self.backbone(x), )

    def loss(self, inputs, data_samples):
        return dict(loss_task=self.extract_feat(inputs)[0].mean())


def test_padded_batches_sample_inside_images():
    from mmdet.structures import DetDataSample
    model = apply_regularizers(_TinyDetector(), drloc=dict(num_pairs=256, in_channels=6))
    seen = []
    head = model.drloc_head[0]
    original = head.forward

    def spy(feats, valid_ratio=None, generator=None):
        pred, target = original(feats, valid_ratio, generator)
        seen.append((valid_ratio, target))
        return pred, target

    head.forward = spy
    metas = [dict(img_shape=(64, 96), batch_input_shape=(64, 96)),
             dict(img_shape=(32, 48), batch_input_shape=(64, 96))]
    data = [DetDataSample(metainfo=m) for m in metas]
    losses = model.loss(torch.randn(2, 3, 64, 96), data)
    assert set(losses) == {'loss_task', 'loss_drloc'}
    ratio, target = seen[0]
    assert ratio.tolist() == [[1.0, 1.0], [0.5, 0.5]]
    # 16x24 map; image 2 covers 8x12 cells -> offsets below 8 rows / 12 cols
    second = target.view(2, 256, 2)[1]
    assert second[:, 0].max() <= 7 and second[:, 1].max() <= 11
    first = target.view(2, 256, 2)[0]
    assert first[:, 0].max() > 7 and first[:, 1].max() > 11


def test_no_forward_pass_at_build_time_one_channel_model():
    """Channels come from the model's structure: a 1-channel ViT builds (a dummy 3-channel
    image at build time used to kill it) and no module runs while building."""
    calls = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda module, args, output: calls.append(type(module).__name__))
    try:
        model = vit_classifier(drloc=dict(num_pairs=4),
                               backbone=dict(TINY_VIT, in_channels=1))
    finally:
        handle.remove()
    assert calls == []
    assert model.drloc_head[0].in_channels == 32
    losses = model.loss(torch.randn(2, 1, 32, 32), samples(2))
    assert torch.isfinite(losses['loss_drloc']) and losses['loss_drloc'] > 0


def test_features_are_captured_during_loss_only():
    model = vit_classifier(drloc=dict(num_pairs=4))
    term = model.drloc_head
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model.predict(x)
        model(x, mode='tensor')
    assert all(not tap.active and tap.output is None for tap in term.taps.values())
    model.train()
    model.loss(x, samples(2))
    assert all(not tap.active and tap.output is None for tap in term.taps.values())
