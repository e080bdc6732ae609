import pytest
import torch
import torch.nn as nn
from mmpretrain.models.utils.attention import MultiheadAttention

import mmvitreg  # noqa: F401
from mmvitreg.models.layers.reattention import ReAttention
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import apply_regularizers
from mmvitreg.regularizers.attention import attention_probs, find_attention_modules
from mmvitreg.regularizers.reattention import (attach_reattention, reattend,
                                               reattention_layer_indices)
from mmvitreg.regularizers.site import site_of

TINY_VIT = dict(type='VisionTransformer',
                arch=dict(embed_dims=32, num_layers=4, num_heads=4, feedforward_channels=64),
                img_size=16, patch_size=4)


def _pair(seed=0, **kwargs):
    torch.manual_seed(seed)
    plain = MultiheadAttention(32, 4)
    reatt = ReAttention(32, 4, **kwargs)
    missing, unexpected = reatt.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all('reatten_matrix' in k or 'var_norm' in k for k in missing)
    return plain, reatt


def test_reattend_identity_is_exact():
    probs = torch.rand(2, 3, 5, 7).softmax(-1)
    out = reattend(probs, torch.eye(3), torch.zeros(3), None)
    assert torch.equal(out, probs)


def test_reattend_mixes_heads_like_the_paper():
    attn = torch.rand(2, 3, 4, 4)
    theta = torch.randn(3, 3)
    expected = torch.einsum('gh,bhnm->bgnm', theta, attn)
    assert torch.allclose(reattend(attn, theta), expected, atol=1e-6)
    # 1x1 conv weight layout is accepted too, and the scale multiplies after the norm
    bn = nn.BatchNorm2d(3).eval()
    out = reattend(attn, theta.view(3, 3, 1, 1), None, bn, scale=0.5)
    assert torch.allclose(out, bn(expected) * 0.5, atol=1e-6)


def test_reattend_bad_shapes():
    with pytest.raises(ValueError, match=r'weight must be \(3, 3\) for 3 heads'):
        reattend(torch.rand(1, 3, 4, 4), torch.eye(2))
    with pytest.raises(ValueError, match='expects attention maps of shape'):
        reattend(torch.rand(3, 4, 4), torch.eye(3))


def test_identity_transform_reproduces_plain_attention():
    plain, reatt = _pair(norm_cfg=None, transform_init='identity')
    x = torch.randn(2, 9, 32)
    assert torch.allclose(reatt(x), plain(x), atol=1e-6, rtol=0)


def test_gradients_reach_the_head_transform():
    _, reatt = _pair()
    reatt.train()
    reatt(torch.randn(2, 9, 32)).sum().backward()
    mixing = reatt.reattention
    for p in (mixing.reatten_matrix.weight, mixing.reatten_matrix.bias, mixing.var_norm.weight,
              reatt.qkv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_official_parameters_and_init():
    reatt = ReAttention(32, 4, transform_scale=True)
    mixing = reatt.reattention
    assert isinstance(mixing.reatten_matrix, nn.Conv2d) and mixing.reatten_matrix.bias is not None
    assert isinstance(mixing.var_norm, nn.BatchNorm2d)
    assert mixing.scale == pytest.approx(8**-0.5)
    assert {'reattention.reatten_matrix.weight', 'reattention.reatten_matrix.bias',
            'reattention.var_norm.running_mean'} <= set(reatt.state_dict())
    with torch.no_grad():
        mixing.reatten_matrix.weight.fill_(3.)
    reatt.init_weights()  # restores PyTorch's default conv init (official)
    assert mixing.reatten_matrix.weight.abs().max() <= 4**-0.5 + 1e-6
    with pytest.raises(ValueError, match="transform_init must be one of"):
        ReAttention(32, 4, transform_init='eye')


def test_attention_map_matches_forward():
    _, reatt = _pair(norm_cfg=None, transform_init='identity')
    x = torch.randn(1, 5, 32)
    _, (maps, ) = attention_probs(reatt, x, stage='mixed')  # the re-generated maps
    assert maps.shape == (1, 4, 5, 5)
    assert torch.allclose(maps.sum(-1), torch.ones(1, 4, 5), atol=1e-5)


def test_regularized_swaps_last_k_keeping_weights():
    torch.manual_seed(0)
    plain = MODELS.build(TINY_VIT)
    torch.manual_seed(0)
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              reattention=dict(last_k=2)))
    assert type(model).__name__ == 'VisionTransformer'
    assert reattention_layer_indices(model) == [2, 3]
    assert type(model.layers[3].attn) is MultiheadAttention  # the host class is kept ...
    assert 'reattention' in model.layers[3].attn._modules  # ... with a head-mixing child
    assert 'reattention' not in model.layers[1].attn._modules
    sd_plain = plain.state_dict()
    for k, v in model.state_dict().items():
        if k in sd_plain:
            assert torch.equal(v, sd_plain[k]), k
    extra = set(model.state_dict()) - set(sd_plain)
    assert extra and all('.attn.reattention.reatten_matrix.' in k or
                         '.attn.reattention.var_norm.' in k for k in extra)
    model.eval()
    assert model(torch.randn(2, 3, 16, 16))[0].shape == (2, 32)


def test_regularizer_all_layers_explicit_layers_and_errors():
    model = MODELS.build(TINY_VIT)
    attach_reattention(model, dict(layers=[0, -1], transform_init='identity', norm_cfg=None))
    assert reattention_layer_indices(model) == [0, 3]
    apply_regularizers(model, reattention=True)  # all layers; existing ones are kept
    assert reattention_layer_indices(model) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r'last_k must be in \[0, 4\], got 9'):
        attach_reattention(MODELS.build(TINY_VIT), dict(last_k=9))
    with pytest.raises(KeyError, match='unknown reattention option'):
        attach_reattention(MODELS.build(TINY_VIT), dict(last=2))
    with pytest.raises(ValueError, match='found no supported attention module in Linear'):
        attach_reattention(nn.Linear(2, 2), {})


def test_swapped_model_trains_and_checkpoints_roundtrip():
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              reattention=dict(last_k=1)))
    model.train()
    # squared: the output features are layer-normed, so their plain sum has zero gradient
    model(torch.randn(2, 3, 16, 16))[0].square().sum().backward()
    assert model.layers[3].attn.reattention.reatten_matrix.weight.grad.abs().sum() > 0
    fresh = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              reattention=dict(last_k=1)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert len(find_attention_modules(fresh)) == 4


def test_pickle_and_deepcopy():
    import copy
    import pickle
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              reattention=dict(last_k=1)))
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    attn = clone.layers[3].attn
    assert 'reattention' in attn._modules
    site = site_of(attn, type(vars(attn)['scaled_dot_product_attention']))
    assert site is not None and site.host is attn


# ---------------------------------------------------------------- DropKey composition
class _FixedDrop(nn.Module):
    """Stands in for DropKey with a known keep mask."""
    active = True

    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def keep_mask(self, q, k, attn_mask=None, grid=None):
        return self.keep


def test_site_masks_logits_before_softmax_and_transforms_after():
    _, reatt = _pair(seed=1)
    reatt.eval()
    x = torch.randn(2, 6, 32)
    keep = torch.rand(2, 4, 6, 6) > 0.3
    keep[..., 0] = True
    reatt.dropkey = _FixedDrop(keep)
    out = reatt(x)
    q, k, v = reatt.qkv(x).reshape(2, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1)) * 8**-0.5
    probs = logits.masked_fill(~keep, float('-inf')).softmax(-1)
    mixing = reatt.reattention
    maps = mixing.var_norm(mixing.reatten_matrix(probs))
    expected = reatt.proj((maps @ v).transpose(1, 2).reshape(2, 6, 32))
    assert torch.allclose(out, expected, atol=1e-5)


def test_reattention_composes_with_dropkey_regularizer():
    cfg = dict(TINY_VIT, type='Regularized', host='VisionTransformer',
               reattention=dict(last_k=2), dropkey=dict(ratio=0.5, schedule='constant'))
    model = MODELS.build(cfg)
    attn = model.layers[3].attn
    assert 'reattention' in attn._modules and attn.dropkey.ratio == 0.5
    x = torch.randn(2, 3, 16, 16)
    model.eval()  # DropKey inactive: exactly the Re-attention forward
    with torch.no_grad():
        ref = model(x)[0]
        attn.dropkey.enabled = False
        assert torch.equal(model(x)[0], ref)
        attn.dropkey.enabled = True
    model.train()
    torch.manual_seed(0)
    with_dk = model(x)[0]
    # weighted: a plain sum of the final LayerNorm's output has zero gradient (only rounding
    # noise, exactly 0 for some initialisations)
    (with_dk * torch.linspace(-1, 1, with_dk.shape[-1])).sum().backward()
    assert attn.reattention.reatten_matrix.weight.grad.abs().sum() > 0
    for layer in model.layers:
        layer.attn.dropkey.ratio = 0.0
    torch.manual_seed(0)
    assert not torch.allclose(with_dk, model(x)[0])
