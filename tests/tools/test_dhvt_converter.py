"""Official DHVT checkpoint -> mmvitreg: key mapping and numerical equivalence.

``_Official*`` below is a compact test-only re-statement of the official model's structure
(ArieSeirack/DHVT ``vision_transformer.py``: module names, square-grid forward), used to produce
checkpoints in the official key layout and reference outputs.
"""
import argparse
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'dhvt_to_mmvitreg', osp.join(REPO, 'tools/model_converters/dhvt_to_mmvitreg.py'))
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)


class _Affine(nn.Module):

    def __init__(self, c):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        return x * self.alpha + self.beta


class _OfficialSOPE(nn.Module):

    def __init__(self, dim, patch):
        super().__init__()
        n = int(math.log2(patch))
        chans = [3] + [dim // 2**(n - 1 - i) for i in range(n)]
        layers = []
        for i in range(n):
            layers.append(nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1, bias=False),
                                        nn.BatchNorm2d(chans[i + 1])))
            if i < n - 1 or n == 1:
                layers.append(nn.GELU())
        self.proj = nn.Sequential(*layers)
        self.pre_affine, self.post_affine = _Affine(3), _Affine(dim)

    def forward(self, x):
        return self.post_affine(self.proj(self.pre_affine(x))).flatten(2).transpose(1, 2)


class _OfficialDAFF(nn.Module):

    def __init__(self, c, hidden):
        super().__init__()
        self.conv1 = nn.Conv2d(c, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv3 = nn.Conv2d(hidden, c, 1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(hidden), nn.BatchNorm2d(hidden), \
            nn.BatchNorm2d(c)
        self.compress, self.excitation = nn.Linear(c, c // 4), nn.Linear(c // 4, c)
        self.act = nn.GELU()

    def forward(self, x):
        B, N, C = x.shape
        side = int(math.sqrt(N - 1))
        cls, t = x[:, :1], x[:, 1:].reshape(B, side, side, C).permute(0, 3, 1, 2)
        t = self.act(self.bn1(self.conv1(t)))
        t = t + self.act(self.bn2(self.conv2(t)))
        t = self.bn3(self.conv3(t))
        w = self.excitation(self.act(self.compress(t.mean((2, 3)).reshape(B, 1, C))))
        return torch.cat([cls * w, t.flatten(2).transpose(1, 2)], 1)


class _OfficialHIAttention(nn.Module):

    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.ht_proj, self.ht_norm = nn.Linear(c // h, c), nn.LayerNorm(c // h)
        self.pos_embed = nn.Parameter(torch.randn(1, h, c) * .02)
        self.act = nn.GELU()

    def forward(self, x):
        B, N, C, h = *x.shape, self.h
        ht = x.reshape(B, N, h, C // h).permute(0, 2, 1, 3).mean(2)
        ht = self.act(self.ht_norm(self.ht_proj(ht).reshape(B, h, h, C // h))).flatten(2)
        x = torch.cat([x, ht + self.pos_embed], 1)
        q, k, v = self.qkv(x).reshape(B, N + h, 3, h, C // h).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (C // h)**-0.5).softmax(-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(B, N + h, C))
        cls, patch, ht = x.split([1, N - 1, h], 1)
        return torch.cat([cls + ht.mean(1, keepdim=True), patch], 1)


class _OfficialBlock(nn.Module):

    def __init__(self, c, h):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c, eps=1e-6), nn.LayerNorm(c, eps=1e-6)
        self.attn, self.mlp = _OfficialHIAttention(c, h), _OfficialDAFF(c, 4 * c)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _OfficialDHVT(nn.Module):

    def __init__(self, dim, depth, heads, patch, num_classes):
        super().__init__()
        self.patch_embed = _OfficialSOPE(dim, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * .02)
        self.blocks = nn.ModuleList([_OfficialBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def _randomized(model: nn.Module) -> nn.Module:
    """Random values everywhere (incl. BN statistics) so that any mis-mapped key shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand_like(t) + 0.5 if 'running_var' in name else
                        torch.randn_like(t) * 0.2)
    return model.eval()


def _classifier(dim, depth, heads, patch, num_classes):
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='DHVT', arch=dict(embed_dims=dim, num_layers=depth, num_heads=heads,
                                             feedforward_channels=4 * dim), patch_size=patch),
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes,
                  in_channels=dim))).eval()


@pytest.mark.parametrize('patch,size', [(2, 8), (4, 16), (16, 64)])
def test_converted_official_checkpoint_loads_exactly_and_matches_outputs(patch, size):
    official = _randomized(_OfficialDHVT(32, 2, 4, patch, 10))
    converted = conv.convert_dhvt(
        conv.extract_state_dict({'model': official.state_dict(), 'epoch': 3}))
    model = _classifier(32, 2, 4, patch, 10)
    result = model.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = official(x)
        got = model(x, mode='tensor')
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_backbone_only_and_ddp_prefix():
    official = _OfficialDHVT(32, 1, 4, 4, 10)
    sd = {f'module.{k}': v for k, v in official.state_dict().items()}
    converted = conv.convert_dhvt(sd, backbone_only=True)
    backbone = MODELS.build(dict(type='DHVT', arch=dict(
        embed_dims=32, num_layers=1, num_heads=4, feedforward_channels=128), patch_size=4))
    result = backbone.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert not any(k.startswith('head') for k in converted)


def test_unknown_keys_are_rejected():
    with pytest.raises(KeyError,
                       match=r"not an official DHVT checkpoint: unknown keys \['pos_embed'\]"):
        conv.convert_dhvt({'pos_embed': torch.zeros(1), 'cls_token': torch.zeros(1)})


def test_cli_converts_ema_weights(tmp_path, capsys):
    official = _OfficialDHVT(32, 1, 4, 4, 10)
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    ema = {k: v + 1 if v.dtype.is_floating_point else v for k, v in official.state_dict().items()}
    torch.save({'model': official.state_dict(), 'model_ema': ema, 'epoch': 299,
                'args': argparse.Namespace(model='dhvt_tiny_cifar_patch4')}, src)
    conv.main([str(src), str(dst), '--ema'])
    out = torch.load(dst, weights_only=True)['state_dict']
    assert torch.equal(out['backbone.cls_token'], ema['cls_token'])
    assert torch.equal(out['head.layers.head.weight'], ema['head.weight'])
    assert 'converted' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        conv.main([str(tmp_path / 'missing.pth'), str(dst)])
    assert 'does not exist' in capsys.readouterr().err
