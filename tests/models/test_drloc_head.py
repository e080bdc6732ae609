"""DRLocHead and the ``drloc`` regularizer on classifiers and detectors (tiny models, CPU)."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.runner import load_checkpoint, save_checkpoint
from mmpretrain.structures import DataSample

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.drloc_head import DRLocHead, _to_map
from mmvitreg.models.losses.drloc import drloc_loss
from mmvitreg.registry import MODELS

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


def position_map(batch, height, width):
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1).expand(batch, 1, -1,
                                                                                   width)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width).expand(batch, 1, height,
                                                                                 -1)
    return torch.cat([rows, cols], dim=1)


@pytest.mark.parametrize('variant', ['l1', 'l1_signed'])
def test_perfect_predictor_gives_zero_loss(variant):
    """Hand-set MLP computing |a - b| (or a - b) from (row, col) features: loss exactly 0."""
    head = DRLocHead(in_channels=2, num_pairs=16, variant=variant, loss_weight=1.0,
                     hidden_dims=(4, 4))
    diff = torch.tensor([[1., 0., -1., 0.], [0., 1., 0., -1.], [-1., 0., 1., 0.],
                         [0., -1., 0., 1.]])  # relu -> [d, -d] split into positive parts
    sign = 1. if variant == 'l1' else -1.
    with torch.no_grad():
        head.mlp[0].weight.copy_(diff)
        head.mlp[2].weight.copy_(torch.eye(4))
        head.mlp[4].weight.copy_(torch.tensor([[1., 0., sign, 0.], [0., 1., 0., sign]]))
        for i in (0, 2, 4):
            head.mlp[i].bias.zero_()
    feats = position_map(3, 3, 6)  # non-square grid
    loss = head.loss(feats, generator=torch.Generator().manual_seed(0))['loss_drloc']
    assert loss.item() == 0.0
    # a wrong sign convention is not a perfect predictor
    with torch.no_grad():
        head.mlp[4].weight[:, 2:] *= -1
    assert head.loss(feats)['loss_drloc'].item() > 0.1


def test_head_value_matches_core_and_lambda():
    head = DRLocHead(in_channels=8, num_pairs=5, variant='l1', loss_weight=0.3)
    feats = torch.randn(2, 8, 4, 3)
    pred, target = head(feats, generator=torch.Generator().manual_seed(0))
    assert pred.shape == target.shape == (10, 2)
    loss = head.loss(feats, generator=torch.Generator().manual_seed(0))['loss_drloc']
    assert loss.item() == pytest.approx(0.3 * drloc_loss(pred, target, 'l1').item(), rel=1e-6)


@pytest.mark.parametrize('variant', ['ce', 'gaussian'])
def test_classification_heads_non_square_bins(variant):
    head = DRLocHead(in_channels=8, num_pairs=4, variant=variant, grid_size=(3, 5))
    (row, col), target = head(torch.randn(2, 8, 3, 5))
    assert row.shape == (8, 5) and col.shape == (8, 9)  # 2*3-1 and 2*5-1 signed offsets
    assert target.dtype == torch.long and target[:, 0].max() <= 4 and target[:, 1].max() <= 8
    assert torch.isfinite(head.loss(torch.randn(2, 8, 3, 5))['loss_drloc'])
    # smaller grids reuse the same bins (zero offset stays bin g-1); bigger ones are refused
    assert torch.isfinite(head.loss(torch.randn(2, 8, 2, 2))['loss_drloc'])
    with pytest.raises(ValueError, match='beyond the classifier range'):
        head.loss(torch.randn(2, 8, 4, 5))
    pooled = DRLocHead(in_channels=8, variant=variant, pool_size=7)
    assert pooled.row_fc.out_features == 13


def test_pooling_in_head():
    head = DRLocHead(in_channels=4, num_pairs=64, pool_size=7)
    _, target = head(torch.randn(1, 4, 14, 28))
    assert target[:, 0].max() <= 6 and target[:, 1].max() <= 6


def test_head_bad_values():
    with pytest.raises(ValueError, match='num_pairs must be an integer >= 1, got 0'):
        DRLocHead(in_channels=8, num_pairs=0)
    with pytest.raises(ValueError, match="variant must be one of .* got 'mse'"):
        DRLocHead(in_channels=8, variant='mse')
    with pytest.raises(ValueError, match=r'loss_weight \(lambda\) must be >= 0, got -1'):
        DRLocHead(in_channels=8, loss_weight=-1)
    with pytest.raises(ValueError, match='pool_size must be an int >= 2'):
        DRLocHead(in_channels=8, pool_size=1)
    with pytest.raises(ValueError, match="'ce' needs grid_size or pool_size"):
        DRLocHead(in_channels=8, variant='ce')
    with pytest.raises(ValueError, match="weight_schedule type must be 'constant' or"):
        DRLocHead(in_channels=8, weight_schedule=dict(type='cosine'))
    head = DRLocHead(in_channels=8)
    with pytest.raises(ValueError, match='at least 2x2 positions, got 1x6'):
        head.loss(torch.randn(2, 8, 1, 6))
    with pytest.raises(ValueError, match='expects a \\(B, C, H, W\\) map'):
        head.loss(torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match='built for in_channels=8, got a map with 4'):
        head.loss(torch.randn(2, 4, 3, 3))


def test_weight_schedule_reads_runner_progress():
    head = DRLocHead(in_channels=4, loss_weight=0.5,
                     weight_schedule=dict(type='warmup_decay', warmup=20))
    hub = MessageHub.get_instance('drloc_schedule_test')
    assert MessageHub.get_current_instance() is hub
    assert head.current_weight() == 0.5  # no runtime info yet: full weight
    hub.update_info('max_epochs', 100)
    for epoch, expected in ((0, 0.0), (10, 0.25), (20, 0.5), (60, 0.25)):
        hub.update_info('epoch', epoch)
        assert head.current_weight() == pytest.approx(expected)
    hub.update_info('epoch', 0)
    assert head.loss(torch.randn(2, 4, 3, 3))['loss_drloc'].item() == 0.0
    by_iter = DRLocHead(in_channels=4, loss_weight=1.0,
                        weight_schedule=dict(warmup=100, by_epoch=False))
    hub.update_info('iter', 50)
    hub.update_info('max_iters', 1000)
    assert by_iter.current_weight() == pytest.approx(0.5)


def test_token_map_drops_extra_tokens():
    tokens = torch.randn(2, 2 + 3 * 4, 5)  # two extra tokens (class + distillation)
    fmap = _to_map(tokens, -1, (3, 4), 'x')
    assert fmap.shape == (2, 5, 3, 4)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 2 + 1 * 4 + 2])
    with pytest.raises(ValueError, match='fewer than the 4x4 patch grid'):
        _to_map(tokens, -1, (4, 4), 'x')


def test_vit_classifier_loss_grads_and_untouched_predict():
    model = vit_classifier(drloc=dict(num_pairs=8, loss_weight=0.1, pool_size=4))
    assert model._drloc_taps == [('backbone.ln1', -1)]
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
    assert [p for p, _ in model._drloc_taps] == ['backbone.layers.0', 'backbone.layers.1']
    assert len(model.drloc_head) == 2
    losses = model.loss(torch.randn(2, 3, 32, 32), samples(2))
    losses['loss_drloc'].backward()
    assert all(p.grad is not None for h in model.drloc_head for p in h.parameters())
    model = vit_classifier(drloc=dict(source='backbone.layers.0', num_pairs=4, in_channels=32))
    assert model._drloc_taps == [('backbone.layers.0', -1)]
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
    assert model._drloc_taps == [('backbone', i) for i in range(4)]
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


def test_regularizer_bad_config():
    with pytest.raises(ValueError, match='must be applied to a model with loss'):
        MODELS.build(dict(type='Regularized', host='VisionTransformer', drloc=dict(),
                          **{k: v for k, v in TINY_VIT.items() if k != 'type'}))
    with pytest.raises(ValueError, match="source 'backbone.nope' is not a submodule"):
        vit_classifier(drloc=dict(source='backbone.nope'))
    with pytest.raises(ValueError, match='num_pairs must be an integer >= 1'):
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
    from mmvitreg.models.regularized import apply_regularizers
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
