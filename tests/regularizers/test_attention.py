"""The attention composition rule (``attend``), finding attention modules, recording maps, and
registering a site for a new host class."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmvitreg  # noqa: F401
from mmvitreg.ops.token_grid import TokenGrid
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.attention import (ATTENTION_SITES, AttentionRecorder, SlotAttentionSite,
                                             attend, attention_probs, find_attention_modules,
                                             match_target, register_attention_site)
from mmvitreg.regularizers.reattention import HeadMixing
from mmvitreg.regularizers.site import Site
from tests.regularizers.common import TINY_VIT


class FixedDrop(nn.Module):
    """Stands in for DropKey with a known keep mask (True = key kept)."""

    active = True

    def __init__(self, keep):
        super().__init__()
        self.keep = keep
        self.kernel_calls = []

    def keep_mask(self, q, k, attn_mask=None, grid=None):
        return self.keep

    def forward(self, q, k, v, attn_mask=None, dropout_p=0.0, scale=None, grid=None):
        self.kernel_calls.append(grid)
        allowed = self.keep if attn_mask is None else self.keep & attn_mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


def _qkv(heads=3, nq=5, nk=7, d=4):
    torch.manual_seed(0)
    return (torch.randn(2, heads, nq, d), torch.randn(2, heads, nk, d),
            torch.randn(2, heads, nk, d))


def _keep(heads=3, nq=5, nk=7):
    keep = torch.rand(2, heads, nq, nk) > 0.4
    keep[..., 0] = True
    return keep


def test_dropkey_masks_logits_before_softmax_reattention_mixes_after():
    q, k, v = _qkv()
    allowed = torch.ones(5, 7, dtype=torch.bool)
    allowed[:, -1] = False  # host mask: last key never attended
    keep = _keep()
    mixing = HeadMixing(3, scale=0.5, norm_cfg=None)
    module = nn.Module()
    module.dropkey, module.reattention = FixedDrop(keep), mixing
    out = attend(module, q, k, v, attn_mask=allowed, scale=0.3)
    logits = (q @ k.transpose(-2, -1)) * 0.3
    logits = logits.masked_fill(~allowed, float('-inf')).masked_fill(~keep, float('-inf'))
    expected = mixing(logits.softmax(-1)) @ v
    assert torch.allclose(out, expected, atol=1e-6)
    assert not module.dropkey.kernel_calls  # composed path, not DropKey's own kernel
    # additive float masks are added to the logits
    bias = torch.randn(5, 7)
    out = attend(module, q, k, v, attn_mask=bias)
    logits = (q @ k.transpose(-2, -1)) * 4**-0.5 + bias
    expected = mixing(logits.masked_fill(~keep, float('-inf')).softmax(-1)) @ v
    assert torch.allclose(out, expected, atol=1e-6)


def test_fast_paths():
    q, k, v = _qkv()
    plain = nn.Module()
    assert torch.equal(attend(plain, q, k, v, scale=0.3),
                       F.scaled_dot_product_attention(q, k, v, scale=0.3))
    drop = nn.Module()
    drop.dropkey = FixedDrop(_keep())
    grid = TokenGrid((2, 3), 1)
    out = attend(drop, q, k, v, grid=grid)
    assert drop.dropkey.kernel_calls == [grid]  # DropKey alone: its own kernel, with the grid
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=drop.dropkey.keep)
    assert torch.allclose(out, expected, atol=1e-6)
    drop.dropkey.active = False  # inactive DropKey (eval): plain SDPA
    assert torch.equal(attend(drop, q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_recorder_stages():
    q, k, v = _qkv()
    module = nn.Module()
    module.dropkey, module.reattention = FixedDrop(_keep()), HeadMixing(3, norm_cfg=None)
    probs = ((q @ k.transpose(-2, -1)) * 4**-0.5).softmax(-1)
    soft = AttentionRecorder('softmax')
    out = attend(module, q, k, v, recorder=soft)
    assert torch.allclose(soft.maps[0], probs, atol=1e-6)  # DropKey off while recording
    assert torch.allclose(out, module.reattention(probs) @ v, atol=1e-6)
    mixed = AttentionRecorder('mixed')
    attend(module, q, k, v, recorder=mixed)
    assert torch.allclose(mixed.maps[0], module.reattention(probs), atol=1e-6)
    with pytest.raises(ValueError, match="stage must be one of .*got 'logits'"):
        AttentionRecorder('logits')


def test_match_target_rules():
    assert match_target('decoder.layers.3.self_attn', 'decoder.self_attn')
    assert not match_target('decoder.layers.3.cross_attn', 'decoder.self_attn')
    assert match_target('encoder.layers.0.self_attn', 'encoder')
    assert not match_target('backbone.encoder.x', 'encoder')
    assert match_target('backbone.layers.11.attn', 'backbone.layers.11')
    assert not match_target('backbone.layers.1.attn', 'backbone.layers.11')
    assert match_target('a.b.c', '*.c') and match_target('anything', '')


def test_find_attention_modules_depth_order_and_targets():
    vit = MODELS.build(TINY_VIT)
    assert [n for n, _ in find_attention_modules(vit)] == ['layers.0.attn', 'layers.1.attn']
    assert [n for n, _ in find_attention_modules(vit, 'layers.1')] == ['layers.1.attn']
    assert find_attention_modules(vit, 'patch_embed') == []
    # a supported attention nested in another one is its implementation detail: skipped
    outer = nn.Module()
    outer.attn = copy.deepcopy(vit.layers[0].attn)
    outer.attn.inner = copy.deepcopy(vit.layers[1].attn)
    assert [n for n, _ in find_attention_modules(outer)] == ['attn']


def test_attention_probs_unsupported_and_temporary_site():
    with pytest.raises(ValueError, match=r'Linear is not a supported attention module; '
                       r"supported: \[.*'MultiheadAttention'"):
        attention_probs(nn.Linear(2, 2), torch.randn(1, 2))
    vit = MODELS.build(TINY_VIT)
    attn = vit.layers[0].attn.eval()
    before = dict(vars(attn))
    x = torch.randn(1, 17, 32)
    out, maps = attention_probs(attn, x)
    assert vars(attn) == before  # the site installed for the call is gone again
    assert not any(isinstance(v, Site) for v in vars(attn).values())
    assert torch.allclose(out, attn(x), atol=1e-5) and maps[0].shape == (1, 2, 17, 17)


class ToyAttention(nn.Module):
    """A new host: its attention step is an overridable ``attention`` method."""

    def __init__(self, dims=16, heads=2):
        super().__init__()
        self.num_heads, self.head_dim = heads, dims // heads
        self.qkv, self.proj = nn.Linear(dims, 3 * dims), nn.Linear(dims, dims)

    def attention(self, q, k, v, attn_mask=None, dropout_p=0.0, scale=None, grid=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = self.attention(q, k, v, grid=TokenGrid((2, 2), 1))
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def test_adding_a_host_is_one_registration():
    from mmvitreg.regularizers import apply_regularizers
    register_attention_site(ToyAttention)(SlotAttentionSite)
    try:
        torch.manual_seed(0)
        host = nn.Sequential(ToyAttention(), ToyAttention())
        plain = copy.deepcopy(host)
        apply_regularizers(host, dropkey=dict(ratio=0.5, variant='block', block_size=1),
                           reattention=dict(last_k=1))
        assert [type(m.dropkey).__name__ for m in host] == ['DropKey', 'DropKey']
        assert hasattr(host[1], 'reattention') and not hasattr(host[0], 'reattention')
        x = torch.randn(2, 5, 16)
        host.eval()
        with torch.no_grad():
            assert torch.equal(host[0](x), plain[0](x))
            host.train()
            torch.manual_seed(0)
            assert not torch.allclose(host[0](x), plain[0](x), atol=1e-5)
    finally:
        ATTENTION_SITES.pop(ToyAttention, None)
