"""DropKey on host models built from configs: mmpretrain ViT/DeiT, timm ViT (TIMMBackbone),
mmdet DETR (encoder / decoder self / cross attention), MC averaging, adapters, checkpoints."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmvitreg  # noqa: F401  (registration)
from mmvitreg.ops.dropkey import DropKey, dropkey_modules, set_dropkey_enabled, set_dropkey_sampling
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.attention import attention_probs, find_attention_modules, match_target

TINY_ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)

HOSTS = {
    'vit': dict(type='VisionTransformer', arch=TINY_ARCH, img_size=32, patch_size=8,
                drop_path_rate=0.0, out_type='cls_token'),
    'deit': dict(type='DistilledVisionTransformer', arch=TINY_ARCH, img_size=32, patch_size=8,
                 drop_path_rate=0.0),
    'timm': dict(type='TIMMBackbone', model_name='vit_tiny_patch16_224', pretrained=False,
                 img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2, num_classes=0),
}


def _build(host_cfg, **dropkey):
    cfg = dict(host_cfg)
    if dropkey:
        cfg = dict(cfg, type='Regularized', host=cfg['type'], dropkey=dropkey)
    return MODELS.build(cfg)


def _out(model, x):
    out = model(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


def _flat(out):
    while isinstance(out, (tuple, list)):
        out = out[-1]
    return out


@pytest.mark.parametrize('host', sorted(HOSTS))
def test_backbone_hosts_train_eval_and_checkpoint(host, tmp_path):
    torch.manual_seed(0)
    plain = _build(HOSTS[host])
    model = _build(HOSTS[host], ratio=0.3, schedule='decrease')
    assert type(model) is type(plain)  # the backbone itself keeps its class
    mods = dropkey_modules(model)
    assert [m.ratio for m in mods] == pytest.approx([0.3, 0.2, 0.1, 0.0])
    # DropKey adds no parameters or buffers: a checkpoint of the plain model loads strictly
    assert list(model.state_dict()) == list(plain.state_dict())
    path = tmp_path / 'plain.pth'
    torch.save(plain.state_dict(), path)
    model.load_state_dict(torch.load(path), strict=True)
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), model.eval()
    with torch.no_grad():
        ref = _flat(plain(x))
        assert torch.equal(_flat(model(x)), ref)  # eval: bit-identical to the plain host
        model.train(), plain.train()
        a, b = _flat(model(x)), _flat(model(x))
        assert not torch.allclose(a, b)  # training: stochastic masks
        assert not torch.allclose(a, _flat(plain(x)), atol=1e-5)
        set_dropkey_enabled(model, False)  # final phase: plain behaviour again
        assert torch.allclose(_flat(model(x)), _flat(plain(x)), atol=1e-5)


def _record_calls(model):
    """Forward pre-hooks on every DropKey module recording its calls: the module, the shapes
    of q and k, and the key grid the attention site gave it."""
    calls = []

    def hook(module, args, kwargs):
        q, k = args[:2]
        calls.append((module, tuple(q.shape), tuple(k.shape), kwargs.get('grid')))

    for m in dropkey_modules(model):
        m.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _dropped_fraction(module, q_shape, k_shape, grid):
    """Fraction of keys DropKey ``module`` drops in a call of these shapes: with zero queries
    and identity values, each output row is uniform over the kept keys (zero where dropped)."""
    nk = k_shape[-2]
    q = torch.zeros(q_shape[:-1] + (nk, ))  # head size = nk, like the identity values
    k = torch.zeros(k_shape[:-1] + (nk, ))
    v = torch.eye(nk).expand(k_shape[:-1] + (nk, ))
    out = module(q, k, v, grid=grid)
    return (out == 0).float().mean().item(), out.numel()


def test_masked_fraction_follows_schedule_per_layer():
    torch.manual_seed(0)
    model = _build(HOSTS['vit'], ratio=0.6, schedule='decrease', min_ratio=0.2)
    model.train()  # (mmpretrain's ViT.train returns None)
    calls = _record_calls(model)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
        expected = [0.6, 0.6 - 0.4 / 3, 0.2 + 0.4 / 3, 0.2]
        assert [m.ratio for m, *_ in calls] == pytest.approx(expected)  # one call per layer
        for (module, q_shape, k_shape, grid), want in zip(calls, expected):
            frac, n = _dropped_fraction(module, q_shape, k_shape, grid)
            assert abs(frac - want) < 5 * (want * (1 - want) / n)**0.5 + 1e-3


def test_regularized_model_host_targets_and_mc_averaging():
    """host='ImageClassifier' with targets on the backbone and Monte-Carlo predict."""
    head = dict(type='VisionTransformerClsHead', num_classes=5, in_channels=32)
    cfg = dict(type='Regularized', host='ImageClassifier', backbone=HOSTS['vit'], head=head,
               dropkey=dict(ratio=0.5, schedule='constant', targets=['backbone.layers.0',
                                                                    'backbone.layers.2'],
                            mc_samples=4))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.eval()
    attached = [n for n, m in model.named_modules() if isinstance(m, DropKey)]
    assert attached == ['backbone.layers.0.attn.dropkey', 'backbone.layers.2.attn.dropkey']
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        single = model.head(model.extract_feat(x)).softmax(1)
        preds = model.predict(x)
        scores = torch.stack([p.pred_score for p in preds])
        assert torch.allclose(scores.sum(1), torch.ones(3), atol=1e-5)
        assert not torch.allclose(scores, single, atol=1e-4)  # MC differs from the plain pass
        # MC = mean of N sampled passes: reproduce it with the same mask stream (a copy: masks
        # depend on each module's call counter, not on the global RNG)
        twin = copy.deepcopy(model)
        preds = model.predict(x)
        set_dropkey_sampling(twin, True)
        manual = sum(twin.head(twin.extract_feat(x)).softmax(1) for _ in range(4)) / 4
        set_dropkey_sampling(twin, False)
        assert torch.allclose(torch.stack([p.pred_score for p in preds]), manual, atol=1e-5)
    assert not any(m.sampling for m in dropkey_modules(model))


def test_mc_samples_needs_classifier_and_unknown_keys_raise():
    with pytest.raises(ValueError, match='mc_samples=3 needs an mmpretrain classifier host'):
        _build(HOSTS['vit'], ratio=0.1, mc_samples=3)
    with pytest.raises(KeyError, match=r"unknown dropkey option\(s\) \['rate'\]"):
        _build(HOSTS['vit'], rate=0.1)
    with pytest.raises(ValueError, match="target 'neck' matched no supported attention"):
        _build(HOSTS['vit'], ratio=0.1, targets=['neck'])
    with pytest.raises(ValueError, match=r'ratio must be in \[0, 1\), got 1.5'):
        _build(HOSTS['vit'], ratio=1.5)


def test_block_variant_on_a_non_square_vit_grid_is_a_clear_error():
    """mmpretrain ViT attention knows its class token but not the patch grid's shape: square
    grids work, a non-square input is refused with one error instead of a wrong layout."""
    cfg = dict(HOSTS['vit'], img_size=(32, 48))
    model = _build(cfg, ratio=0.3, variant='cross', block_size=3, schedule='constant')
    model.train()
    calls = _record_calls(model)
    assert torch.isfinite(_flat(model(torch.randn(1, 3, 32, 32)))).all()
    assert calls[0][3].hw == (4, 4) and calls[0][3].num_extra_tokens == 1
    with pytest.raises(ValueError, match='grid'):
        model(torch.randn(1, 3, 32, 48))  # 4x6 grid + 1 class token = 25 keys, not a square
    model.eval()
    assert torch.isfinite(_flat(model(torch.randn(1, 3, 32, 48)))).all()  # eval: host forward


def test_match_target_rules():
    assert match_target('decoder.layers.3.self_attn', 'decoder.self_attn')
    assert not match_target('decoder.layers.3.cross_attn', 'decoder.self_attn')
    assert match_target('encoder.layers.0.self_attn', 'encoder')
    assert not match_target('backbone.encoder.x', 'encoder')
    assert match_target('backbone.layers.11.attn', 'backbone.layers.11')
    assert match_target('a.b.c', '*.c') and match_target('anything', '')


def test_attention_probs_reproduce_host_output():
    torch.manual_seed(0)
    for key in ('vit', 'timm'):
        model = _build(HOSTS[key])
        model.eval()
        name, attn = find_attention_modules(model)[0]
        x = torch.randn(2, 17, 32)
        out, maps = attention_probs(attn, x)
        assert torch.allclose(out, attn(x), atol=1e-5)
        assert maps[0].shape == (2, 2, 17, 17)
        assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 17), atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_host_autocast_finite_with_high_ratio(dtype):
    torch.manual_seed(0)
    cfg = dict(HOSTS['vit'], img_size=16, patch_size=8)  # 4 tokens + cls
    model = _build(cfg, ratio=0.9, schedule='constant')
    model.train()
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast('cpu', dtype=dtype):
        out = _flat(model(x))
    out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------ DETR
def _mmdet_cfg(rel):
    import os.path as osp

    import mmdet
    return Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', rel))


def _tiny_detr_cfg(dropkey=None, drop=0.0):
    cfg = _mmdet_cfg('detr/detr_r50_8xb2-150e_coco.py').model
    cfg = copy.deepcopy(cfg.to_dict())
    cfg['backbone'].update(depth=18, frozen_stages=-1, init_cfg=None)
    cfg['neck'].update(in_channels=[512], out_channels=32)
    for part in ('encoder', 'decoder'):
        cfg[part]['num_layers'] = 2
        layer = cfg[part]['layer_cfg']
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer:
                layer[key].update(embed_dims=32, num_heads=2, dropout=drop)
        layer['ffn_cfg'].update(embed_dims=32, feedforward_channels=64, ffn_drop=drop)
    cfg['positional_encoding']['num_feats'] = 16
    cfg['bbox_head']['embed_dims'] = 32
    cfg['num_queries'] = 10
    if dropkey is not None:
        cfg = dict(cfg, type='Regularized', host='DETR', dropkey=dropkey)
    return cfg


def _detr_inputs():
    from mmdet.structures import DetDataSample
    x = torch.randn(2, 3, 64, 96)
    samples = []
    for shape in ((64, 96), (48, 80)):  # second image padded: key padding mask in use
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=shape, batch_input_shape=(64, 96)))
        samples.append(s)
    return x, samples


@pytest.mark.parametrize('targets, expected', [
    (['encoder'], {'encoder.layers.0.self_attn', 'encoder.layers.1.self_attn'}),
    (['decoder.self_attn'], {'decoder.layers.0.self_attn', 'decoder.layers.1.self_attn'}),
    (['decoder.cross_attn'], {'decoder.layers.0.cross_attn', 'decoder.layers.1.cross_attn'}),
])
def test_detr_targets_train_eval_checkpoint(targets, expected):
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        plain = MODELS.build(_tiny_detr_cfg())
        model = MODELS.build(_tiny_detr_cfg(dict(ratio=0.3, schedule='constant', targets=targets)))
    model.load_state_dict(plain.state_dict(), strict=True)
    assert list(model.state_dict()) == list(plain.state_dict())
    called = set()
    for name, m in model.named_modules():
        if isinstance(m, DropKey):
            m.register_forward_hook(lambda mod, i, o, n=name: called.add(n.rsplit('.', 1)[0]))
    x, samples = _detr_inputs()
    with torch.no_grad():
        plain.eval(), model.eval()
        assert torch.equal(_flat(model._forward(x, samples)), _flat(plain._forward(x, samples)))
        assert not called
        model.train(), plain.train()
        out = _flat(model._forward(x, samples))
        assert called == expected
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, _flat(plain._forward(x, samples)), atol=1e-5)


def test_detr_adapter_matches_host_with_padding_masks():
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(_tiny_detr_cfg())
    model.eval()
    x, samples = _detr_inputs()
    layer = model.encoder.layers[0].self_attn
    seq = torch.randn(2, 12, 32)
    pos = torch.randn(2, 12, 32)
    kpm = torch.zeros(2, 12, dtype=torch.bool)
    kpm[1, 8:] = True
    ref = layer(seq, query_pos=pos, key_pos=pos, key_padding_mask=kpm)
    out, maps = attention_probs(layer, seq, query_pos=pos, key_pos=pos, key_padding_mask=kpm)
    assert torch.allclose(out, ref, atol=1e-5)
    assert maps[0][1, :, :, 8:].abs().max() == 0


def test_deformable_attention_is_refused():
    cfg = _mmdet_cfg('deformable_detr/deformable-detr_r50_16xb2-50e_coco.py').model
    cfg = copy.deepcopy(cfg.to_dict())
    cfg['backbone'].update(depth=18, frozen_stages=-1, init_cfg=None, out_indices=(1, 2, 3))
    cfg['neck']['in_channels'] = [128, 256, 512]
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(ValueError, match='deformable attention'):
            MODELS.build(dict(copy.deepcopy(cfg), type='Regularized', host='DeformableDETR',
                              dropkey=dict(ratio=0.1)))
        # its decoder self-attention is a regular softmax attention and can be selected
        model = MODELS.build(dict(copy.deepcopy(cfg), type='Regularized', host='DeformableDETR',
                                  dropkey=dict(ratio=0.1, targets=['decoder.self_attn'])))
    assert len(dropkey_modules(model)) == 6


# ------------------------------------------------------------------------------------- PlainViT
PLAIN_ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64,
                  global_attn_indexes=(1, 3))


@pytest.mark.parametrize('variant', ['random', 'block', 'cross'])
def test_plain_vit_dropkey_non_square(variant):
    cfg = dict(type='PlainViT', arch=PLAIN_ARCH, img_size=64, patch_size=8, window_size=3,
               pretrain_img_size=32, drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = MODELS.build(cfg)
    model = MODELS.build(dict(cfg, type='Regularized', host='PlainViT',
                              dropkey=dict(ratio=0.4, schedule='constant', variant=variant,
                                           block_size=2)))
    model.load_state_dict(plain.state_dict(), strict=True)
    assert len(dropkey_modules(model)) == 4
    x = torch.randn(2, 3, 72, 40)  # 9x5 token grid: windows of 3 pad, global blocks see 9x5
    plain.eval()
    model.eval()
    with torch.no_grad():
        ref = plain(x)[0]
        assert ref.shape == (2, 32, 9, 5)
        assert torch.equal(model(x)[0], ref)
    model.train()
    calls = _record_calls(model)
    out = model(x)[0]
    seen = [grid.hw for *_, grid in calls]
    assert not torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if variant != 'random':  # windows (3x3) and the global 9x5 grid are the key grids
        assert set(seen) == {(3, 3), (9, 5)}
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16))
    feats = neck(model(x))
    assert [f.shape[-2:] for f in feats] == [(36, 20), (18, 10), (9, 5), (4, 2), (2, 1)]


def test_plain_vit_loads_checkpoint_with_cls_pos_embed():
    cfg = dict(type='PlainViT', arch=PLAIN_ARCH, img_size=64, patch_size=8, window_size=3,
               pretrain_img_size=32, use_rel_pos=False)
    model = MODELS.build(cfg)
    pe = torch.randn(1, 1 + 8 * 8, 32)  # a 64px checkpoint with a class token
    res = model.load_state_dict({'pos_embed': pe}, strict=False)
    assert 'pos_embed' not in res.missing_keys
    assert model.pos_embed.shape == (1, 16, 32)
