"""The ``attention_dropout`` key: dropout on the attention probabilities with DropKey's depth
schedule, folded into the host's own attention dropout (so the fused kernels compute it)."""
import pytest
import torch
import torch.nn.functional as F

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.attention import AttentionRecorder, attention_plan
from tests.regularizers.common import TINY_VIT


def _vit(layers=4, attn_drop=0.0, **regularizers):
    torch.manual_seed(0)
    arch = dict(TINY_VIT['arch'], num_layers=layers)
    cfg = dict(TINY_VIT, arch=arch, layer_cfgs=dict(attn_drop_rate=attn_drop))
    if regularizers:
        cfg = dict(cfg, type='Regularized', host='VisionTransformer', **regularizers)
    return MODELS.build(cfg)


def test_depth_schedule_and_summary(caplog):
    model = _vit(attention_dropout=dict(ratio=0.3))
    assert [layer.attn.attention_dropout.p for layer in model.layers] == \
        pytest.approx([0.3, 0.2, 0.1, 0.0])
    model = _vit(attention_dropout=dict(ratio=0.2, schedule='constant', targets='layers.1'))
    assert [hasattr(layer.attn, 'attention_dropout') for layer in model.layers] == \
        [False, True, False, False]
    model = _vit(attention_dropout=dict(ratio=0.3, schedule='increase', min_ratio=0.15))
    assert [layer.attn.attention_dropout.p for layer in model.layers] == \
        pytest.approx([0.15, 0.2, 0.25, 0.3])


@pytest.mark.parametrize('cfg, error, match', [
    (dict(), KeyError, 'attention_dropout needs `ratio`'),
    (dict(ratio=1.0), ValueError, r'ratio must be a number in \[0, 1\), got 1.0'),
    (dict(ratio=0.1, min_ratio=-0.1), ValueError, r'min_ratio must be a number in \[0, 1\)'),
    (dict(ratio=0.1, schedule='cosine'), ValueError, r"schedule must be one of .*got 'cosine'"),
    (dict(ratio=0.1, rate=0.1), KeyError, r"unknown attention_dropout option\(s\) \['rate'\]"),
    (dict(ratio=0.1, targets='neck'), ValueError, 'found no supported attention module'),
])
def test_bad_options_are_one_clear_error(cfg, error, match):
    with pytest.raises(error, match=match):
        _vit(attention_dropout=cfg)


def test_eval_is_the_plain_host_and_training_folds_into_sdpa_dropout():
    plain = _vit()
    model = _vit(attention_dropout=dict(ratio=0.3))
    x = torch.randn(2, 3, 16, 16)
    plain.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])
    model.train()
    attn = model.layers[0].attn
    plan = attention_plan(attn)
    assert plan.path == 'sdpa' and plan.stages == () and plan.dropout_p == pytest.approx(0.3)
    q, k, v = (torch.randn(2, 2, 17, 16) for _ in range(3))
    torch.manual_seed(5)
    out = attn.scaled_dot_product_attention(q, k, v)
    torch.manual_seed(5)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, dropout_p=plan.dropout_p))
    # with the host's own attention dropout: one dropout of the combined probability
    hosted = _vit(attn_drop=0.1, attention_dropout=dict(ratio=0.3))
    hosted.train()
    assert attention_plan(hosted.layers[0].attn, 0.1).dropout_p == pytest.approx(1 - 0.9 * 0.7)
    assert attention_plan(hosted.layers[3].attn, 0.1).dropout_p == 0.1  # p = 0 at the top


def test_drop_rate_on_the_explicit_path_with_reattention():
    """Composed with Re-attention (explicit rule): the maps multiplied with V are the head mixing
    of the dropped-out probabilities; about p of them are zeroed before mixing."""
    model = _vit(layers=2, attention_dropout=dict(ratio=0.5, schedule='constant'),
                 reattention=dict(last_k=1, norm_cfg=None, transform_init='identity'))
    model.train()
    attn = model.layers[1].attn
    assert attention_plan(attn).path == 'explicit'
    site = attn.scaled_dot_product_attention
    site.recorder = AttentionRecorder('mixed', detach=False)
    try:
        q, k, v = (torch.randn(8, 2, 17, 16) for _ in range(3))
        torch.manual_seed(3)
        out = site(q, k, v)
        maps = site.recorder.maps[0]
    finally:
        site.recorder = None
    probs = ((q @ k.transpose(-2, -1)) * 16**-0.5).softmax(-1)
    dropped = maps == 0
    assert 0.47 < dropped.float().mean() < 0.53
    torch.testing.assert_close(maps[~dropped], 2 * probs[~dropped])  # identity mixing
    torch.testing.assert_close(out, maps @ v)


def test_composes_with_dropkey_on_dropkeys_kernel():
    model = _vit(layers=2, attention_dropout=dict(ratio=0.2, schedule='constant'),
                 dropkey=dict(ratio=0.1, schedule='constant'))
    model.train()
    plan = attention_plan(model.layers[0].attn)
    assert plan.path == 'dropkey' and plan.dropout_p == pytest.approx(0.2)
    x = torch.randn(2, 3, 16, 16)
    out = model(x)[0]
    # squared: the features are layer-normed, so their plain sum is constant (zero gradient)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert model.layers[0].attn.qkv.weight.grad.abs().sum() > 0


def test_timm_host():
    timm = pytest.importorskip('timm')
    from mmvitreg.regularizers import apply_regularizers
    torch.manual_seed(0)
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=2)
    plain = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                              depth=2)
    plain.load_state_dict(net.state_dict())
    apply_regularizers(net, attention_dropout=dict(ratio=0.4, schedule='constant'))
    x = torch.randn(2, 3, 32, 32)
    net.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))
        net.train(), plain.train()
        assert not torch.allclose(net(x), plain(x))


@pytest.mark.parametrize('preset', ['cifar100_dropkey.py', 'in1k_dropkey.py'])
def test_gpu_dropkey_presets_have_the_scheduled_attention_dropout_variant(preset):
    import os.path as osp

    from mmengine.registry import DefaultScope

    from mmvitreg.benchmark import build_run_config, load_spec
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = load_spec(osp.join(repo, 'configs', 'benchmark', preset))
    run = build_run_config(spec, spec.variant('attention_dropout'), 0)
    base = build_run_config(spec, spec.variant('baseline'), 0)
    backbone = run.model.backbone.to_dict()
    assert backbone.pop('attention_dropout') == dict(ratio=0.1, schedule='decrease')
    assert (backbone.pop('type'), backbone.pop('host')) == ('Regularized', 'VisionTransformer')
    assert backbone == {k: v for k, v in base.model.backbone.to_dict().items() if k != 'type'}
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(run.model.backbone.to_dict(), arch=dict(
            embed_dims=32, num_layers=12, num_heads=2, feedforward_channels=32)))
    ratios = [layer.attn.attention_dropout.p for layer in model.layers]
    assert ratios == pytest.approx([0.1 * (1 - i / 11) for i in range(12)])
