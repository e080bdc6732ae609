"""DHVT backbone and layers: parameter counts, shapes (square and non-square), functional core."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmvitreg  # noqa: F401  (registration)
from mmvitreg.models.backbones.dhvt import DHVT
from mmvitreg.models.layers.dhvt_layers import (DAFF, HIMHSA, SOPE, head_tokens, insert_head_tokens,
                                                merge_head_tokens, sope_channels, tokens_to_map)
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import apply_regularizers
from mmvitreg.regularizers.attention import attention_probs, find_attention_modules

TINY = dict(embed_dims=32, num_layers=2, num_heads=4, feedforward_channels=64)


def _num_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# Convention: trainable parameters (BatchNorm running statistics are buffers, not counted) of the
# DHVT backbone + mmpretrain VisionTransformerClsHead (one Linear, as the official `head`) with
# 100 classes for the CIFAR models and 1000 for the ImageNet models, as in the official configs
# (`main.py --data-set CIFAR` / `IMNET`). The exact integers were derived by hand from the official
# `vision_transformer.py`; the paper/README values are their roundings to 0.01M.
@pytest.mark.parametrize('arch,patch,heads,num_classes,expected,rounded', [
    ('tiny', 4, None, 100, 6_008_650, 6.01),
    ('tiny', 2, None, 100, 5_845_162, 5.85),
    ('small', 4, None, 100, 23_425_450, 23.43),
    ('small', 2, None, 100, 22_766_698, 22.77),
    ('tiny', 16, 3, 1000, 6_267_334, 6.27),
    ('small', 16, 6, 1000, 24_040_606, 24.04),
])
def test_param_counts_match_official(arch, patch, heads, num_classes, expected, rounded):
    backbone = MODELS.build(dict(type='DHVT', arch=arch, patch_size=patch, num_heads=heads))
    head = MODELS.build(dict(type='VisionTransformerClsHead', num_classes=num_classes,
                             in_channels=backbone.embed_dims))
    total = _num_params(backbone, head)
    assert total == expected
    assert round(total / 1e6, 2) == rounded


@pytest.mark.parametrize('patch,grid', [(4, 8), (2, 16)])
def test_cifar_shapes(patch, grid):
    model = DHVT(arch=TINY, patch_size=patch, out_type='raw').eval()
    with torch.no_grad():
        (raw, ) = model(torch.randn(2, 3, 32, 32))
    assert raw.shape == (2, 1 + grid * grid, 32)
    assert model.patch_resolution == (grid, grid)


def test_tiny_32px_and_224px_classification():
    torch.manual_seed(0)
    cifar = DHVT('tiny', patch_size=4).eval()
    imnet = DHVT('tiny', patch_size=16, num_heads=3, out_type='featmap', out_indices=(5, 11))
    imnet.eval()
    with torch.no_grad():
        (cls, ) = cifar(torch.randn(2, 3, 32, 32))
        mid, last = imnet(torch.randn(1, 3, 224, 224))
    assert cls.shape == (2, 192)
    assert mid.shape == last.shape == (1, 192, 14, 14)
    assert imnet.patch_resolution == (14, 14)


def test_non_square_detection_featmaps_and_simple_pyramid():
    model = DHVT(arch=TINY, patch_size=16, out_type='featmap').eval()
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16,
                             scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5)).eval()
    with torch.no_grad():
        (fmap, ) = model(torch.randn(1, 3, 320, 480))
        outs = neck((fmap, ))
    assert fmap.shape == (1, 32, 20, 30) and model.patch_resolution == (20, 30)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 80, 120), (1, 16, 40, 60), (1, 16, 20, 30),
                                              (1, 16, 10, 15), (1, 16, 5, 8)]
    plain = DHVT(arch=TINY, patch_size=16, out_type='featmap', out_indices=(0, 1)).eval()
    with torch.no_grad():
        outs = plain(torch.randn(2, 3, 100, 150))  # not multiples of 16: ceil(100/16), ceil(150/16)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 7, 10)] * 2


def test_featmap_is_row_major_token_grid():
    """The featmap is the patch tokens of `raw` laid out row-major (what DRLoc samples)."""
    torch.manual_seed(0)
    raw_model = DHVT(arch=TINY, patch_size=4, out_type='raw').eval()
    map_model = DHVT(arch=TINY, patch_size=4, out_type='featmap').eval()
    map_model.load_state_dict(raw_model.state_dict())
    x = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        (raw, ), (fmap, ) = raw_model(x), map_model(x)
    assert fmap.shape == (1, 32, 4, 6)
    assert torch.allclose(fmap[0, :, 1, 2], raw[0, 1 + 1 * 6 + 2])


def test_backward_reaches_every_parameter():
    model = DHVT(arch=TINY, patch_size=4, drop_path_rate=0.)  # no random path drops
    model.train()
    (cls, ) = model(torch.randn(2, 3, 16, 16))
    cls.pow(2).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []


def test_sope_structure_follows_official():
    assert sope_channels(192, 2) == [192]
    assert sope_channels(192, 4) == [96, 192]
    assert sope_channels(192, 16) == [24, 48, 96, 192]
    sope = SOPE(3, 64, 4)
    assert [m.with_activation for m in sope.projection] == [True, False]
    assert [m.with_activation for m in SOPE(3, 64, 2).projection] == [True]  # official quirk
    assert all(m.conv.bias is None and m.with_norm for m in sope.projection)
    tokens, hw = sope(torch.randn(2, 3, 12, 20))
    assert hw == (3, 5) and tokens.shape == (2, 15, 64)


def test_sope_affines_scale_input_and_output():
    torch.manual_seed(0)
    sope = SOPE(3, 16, 2).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        base, _ = sope(x)
        sope.post_affine.alpha.fill_(2.)
        sope.post_affine.beta.fill_(1.)
        scaled, _ = sope(x)
    assert torch.allclose(scaled, 2 * base + 1, atol=1e-6)


def test_head_tokens_matches_per_head_loop():
    torch.manual_seed(0)
    B, N, C, h = 2, 5, 12, 3
    x = torch.randn(B, N, C)
    proj, norm = nn.Linear(C // h, C), nn.LayerNorm(C // h)
    pos = torch.randn(1, h, C)
    out = head_tokens(x, h, proj.weight, proj.bias, norm.weight, norm.bias, pos)
    for b in range(B):
        for i in range(h):
            pooled = x[b, :, i * C // h:(i + 1) * C // h].mean(0)  # class token included
            full = proj(pooled).reshape(h, C // h)  # LN over each C/h chunk (official)
            expected = F.gelu(norm(full)).reshape(C) + pos[0, i]
            assert torch.allclose(out[b, i], expected, atol=1e-6)


def test_insert_and_merge_head_tokens():
    x = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)  # cls + 3 patches
    heads = -torch.arange(2 * 2 * 3, dtype=torch.float).reshape(2, 2, 3)
    ext = insert_head_tokens(x, heads)
    assert torch.equal(ext[:, 0], x[:, 0]) and torch.equal(ext[:, 1:3], heads)
    out = merge_head_tokens(ext, 2)
    assert torch.equal(out[:, 1:], x[:, 1:])
    assert torch.allclose(out[:, 0], x[:, 0] + heads.mean(1))


def test_himhsa_core_receives_head_tokens_and_grid_hints():
    torch.manual_seed(0)
    attn = HIMHSA(16, 4).eval()
    x = torch.randn(2, 1 + 2 * 3, 16)
    calls = []

    def core(q, k, v, attn_mask=None, dropout_p=0., scale=None, grid=None):
        calls.append((tuple(k.shape), grid.hw, grid.num_extra_tokens, scale))
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    with torch.no_grad():
        plain = attn(x, (2, 3))
        attn.attention = core  # the attention step is one overridable method
        custom = attn(x, (2, 3))
        del attn.attention
        out, maps = attention_probs(attn, x, (2, 3))
    assert calls == [((2, 4, 1 + 4 + 6, 4), (2, 3), 1 + 4, 0.5)]
    assert torch.allclose(plain, custom, atol=1e-6) and torch.allclose(plain, out, atol=1e-5)
    assert maps[0].shape == (2, 4, 11, 11)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 11))


def test_dhvt_with_dropkey_changes_training_output_only():
    torch.manual_seed(0)
    model = apply_regularizers(DHVT(arch=TINY, patch_size=4, drop_path_rate=0.),
                               dropkey=dict(ratio=0.5, schedule='constant', variant='block'))
    assert len(find_attention_modules(model)) == 2
    assert all(layer.attn.dropkey.ratio == 0.5 for layer in model.layers)
    assert not any('dropkey' in k for k in model.state_dict())
    ref = DHVT(arch=TINY, patch_size=4, drop_path_rate=0.)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 24)  # non-square 4x6 key grid for the block variant
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], ref(x)[0])
        model.train(), ref.train()
        assert not torch.allclose(model(x)[0], ref(x)[0], atol=1e-4)


def test_daff_cls_reweight_and_non_square_grid():
    torch.manual_seed(0)
    daff = DAFF(8, 16).eval()
    x = torch.randn(2, 1 + 3 * 5, 8)
    with torch.no_grad():
        out = daff(x, (3, 5))
        assert out.shape == x.shape
        daff.se_expand.weight.zero_()
        daff.se_expand.bias.fill_(2.)  # no sigmoid (official): weight is the raw linear output
        out2 = daff(x, (3, 5))
    assert torch.allclose(out2[:, 0], 2 * x[:, 0])
    assert torch.allclose(out2[:, 1:], out[:, 1:])
    with pytest.raises(ValueError, match=r'tokens_to_map got 15 tokens for a grid of'):
        daff(x, (4, 4))


def test_tokens_to_map_layout():
    tokens = torch.arange(6.).reshape(1, 6, 1)
    assert tokens_to_map(tokens, (2, 3))[0, 0].tolist() == [[0., 1., 2.], [3., 4., 5.]]


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match='SOPE patch_size must be a power of two >= 2, got 3'):
        DHVT(arch=TINY, patch_size=3)
    with pytest.raises(KeyError, match='DHVT arch must be one of'):
        DHVT(arch='huge')
    with pytest.raises(ValueError, match='embed_dims=32 must be divisible by num_heads=3'):
        DHVT(arch=TINY, num_heads=3)
    with pytest.raises(ValueError, match="DHVT out_type must be one of"):
        DHVT(arch=TINY, out_type='tokens')
    with pytest.raises(ValueError, match=r'DHVT out_indices must be in \[-2, 1\], got 2'):
        DHVT(arch=TINY, out_indices=2)
    with pytest.raises(TypeError, match="'not_a_regularizer'.*known regularizer keys"):
        MODELS.build(dict(type='Regularized', host='DHVT', arch=TINY,
                          not_a_regularizer=dict()))


def test_official_init_and_norm_eval():
    model = DHVT(arch=TINY, patch_size=4, norm_eval=True)
    model.init_weights()
    qkv = model.layers[0].attn.qkv
    assert torch.count_nonzero(qkv.bias) == 0 and 0.01 < qkv.weight.std() < 0.03
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.layers[0].ln1.training
