"""Official DeepViT checkpoint layout -> mmvitreg: keys, strict loading, numerics, CLI errors."""
import argparse
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'deepvit_to_mmvitreg', osp.join(REPO, 'tools/model_converters/deepvit_to_mmvitreg.py'))
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

TINY = dict(embed_dims=24, num_layers=3, num_heads=3, feedforward_channels=72,
            reattention_last_k=2, transform_scale=True, residual_scale=0.5, stem='conv')


def official_state_dict(dim, depth, hidden, heads, reatt_layers, conv_stem, patch, img,
                        num_classes=10, stem_ch=64, zeros=False):
    """Random weights with the key layout of the official ``DeepVisionTransformer``."""
    make = torch.zeros if zeros else torch.randn
    sd = OrderedDict(cls_token=make(1, 1, dim),
                     pos_embed=make(1, (img // patch)**2 + 1, dim))
    if conv_stem:
        sd['patch_embed.conv1.weight'] = make(stem_ch, 3, 7, 7) * 0.1
        for i in (1, 2):
            sd[f'patch_embed.bn{i}.weight'] = torch.rand(stem_ch) + 0.5
            sd[f'patch_embed.bn{i}.bias'] = make(stem_ch) * 0.1
            sd[f'patch_embed.bn{i}.running_mean'] = make(stem_ch) * 0.1
            sd[f'patch_embed.bn{i}.running_var'] = torch.rand(stem_ch) + 0.5
            sd[f'patch_embed.bn{i}.num_batches_tracked'] = torch.tensor(7)
            if i == 1:
                sd['patch_embed.conv2.weight'] = make(stem_ch, stem_ch, 3, 3) * 0.05
        sd['patch_embed.proj.weight'] = make(dim, stem_ch, patch // 2, patch // 2) * 0.05
    else:
        sd['patch_embed.proj.weight'] = make(dim, 3, patch, patch) * 0.05
    sd['patch_embed.proj.bias'] = make(dim) * 0.1
    for b in range(depth):
        p = f'blocks.{b}.'
        sd[p + 'norm1.weight'], sd[p + 'norm1.bias'] = torch.rand(dim) + 0.5, make(dim) * .1
        sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'] = make(3 * dim, dim) * .2, make(3 * dim)
        if b in reatt_layers:
            sd[p + 'attn.reatten_matrix.weight'] = make(heads, heads, 1, 1)
            sd[p + 'attn.reatten_matrix.bias'] = make(heads) * 0.1
            sd[p + 'attn.var_norm.weight'] = torch.rand(heads) + 0.5
            sd[p + 'attn.var_norm.bias'] = make(heads) * 0.1
            sd[p + 'attn.var_norm.running_mean'] = make(heads) * 0.1
            sd[p + 'attn.var_norm.running_var'] = torch.rand(heads) + 0.5
            sd[p + 'attn.var_norm.num_batches_tracked'] = torch.tensor(3)
        sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'] = make(dim, dim) * .2, make(dim) * .1
        sd[p + 'norm2.weight'], sd[p + 'norm2.bias'] = torch.rand(dim) + 0.5, make(dim) * .1
        sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'] = make(hidden, dim) * .2, make(hidden) * .1
        sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'] = make(dim, hidden) * .2, make(dim) * .1
    sd['norm.weight'], sd['norm.bias'] = torch.rand(dim) + 0.5, make(dim) * .1
    sd['head.weight'], sd['head.bias'] = make(num_classes, dim) * .2, make(num_classes) * .1
    return sd


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[prefix + 'running_mean'], sd[prefix + 'running_var'],
                        sd[prefix + 'weight'], sd[prefix + 'bias'], False, 0., 1e-5)


def official_forward(sd, x, heads, patch, scale_adjustment, transform_scale):
    """The official eval-mode forward written out from the paper/official code structure."""
    if 'patch_embed.conv1.weight' in sd:
        x = F.relu(_bn(F.conv2d(x, sd['patch_embed.conv1.weight'], stride=2, padding=3), sd,
                       'patch_embed.bn1.'))
        x = F.relu(_bn(F.conv2d(x, sd['patch_embed.conv2.weight'], padding=1), sd,
                       'patch_embed.bn2.'))
        x = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                     stride=patch // 2)
    else:
        x = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    B, _, C = x.shape
    x = torch.cat([sd['cls_token'].expand(B, -1, -1), x], 1) + sd['pos_embed']
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    a, hd = scale_adjustment, C // heads

    def ln(t, p):
        return F.layer_norm(t, (C, ), sd[p + 'weight'], sd[p + 'bias'], 1e-6)

    for b in range(depth):
        p = f'blocks.{b}.'
        h = ln(x * a, p + 'norm1.')
        N = h.shape[1]
        qkv = F.linear(h, sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * hd**-0.5).softmax(-1)
        if p + 'attn.reatten_matrix.weight' in sd:
            attn = F.conv2d(attn, sd[p + 'attn.reatten_matrix.weight'],
                            sd[p + 'attn.reatten_matrix.bias'])
            attn = _bn(attn, sd, p + 'attn.var_norm.') * (hd**-0.5 if transform_scale else 1.)
        out = F.linear((attn @ v).transpose(1, 2).reshape(B, N, C), sd[p + 'attn.proj.weight'],
                       sd[p + 'attn.proj.bias'])
        x = x + out / a
        h = F.gelu(F.linear(ln(x * a, p + 'norm2.'), sd[p + 'mlp.fc1.weight'],
                            sd[p + 'mlp.fc1.bias']))
        x = x + F.linear(h, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias']) / a
    x = ln(x, 'norm.')
    return F.linear(x[:, 0], sd['head.weight'], sd['head.bias'])


def _classifier(arch, img_size, patch_size, num_classes=10):
    dim = MODELS.get('DeepViT')._resolve_arch(arch)['embed_dims']
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='DeepViT', arch=arch, img_size=img_size, patch_size=patch_size),
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=dim)))


@pytest.mark.parametrize('arch', [
    TINY,
    dict(TINY, stem='patch', residual_scale=1.0, transform_scale=False, reattention_last_k=3),
])
def test_converted_official_weights_give_official_outputs(arch):
    torch.manual_seed(0)
    depth = arch['num_layers']
    reatt = list(range(depth - arch['reattention_last_k'], depth))
    sd = official_state_dict(24, depth, 72, 3, reatt, arch['stem'] == 'conv', 4, 32)
    converted = conv.convert_deepvit(sd)
    model = _classifier(arch, 32, 4).eval()
    model.load_state_dict(converted, strict=True)  # no missing / unexpected keys
    conv.check_loadable(converted, arch, img_size=32, patch_size=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(x, mode='tensor')
        ref = official_forward(sd, x, 3, 4, arch['residual_scale'], arch['transform_scale'])
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
    # round trip back to the official layout is lossless
    back = conv.convert_mmvitreg_to_official(converted)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_backbone_only_and_module_prefix():
    sd = official_state_dict(24, 3, 72, 3, [1, 2], True, 4, 32)
    sd = OrderedDict((f'module.{k}', v) for k, v in sd.items())
    out = conv.convert_deepvit(sd, backbone_only=True)
    assert 'layers.2.attn.reattention.reatten_matrix.weight' in out
    assert 'patch_embed.proj.weight' in out
    assert not any(k.startswith(('head', 'backbone')) for k in out)
    MODELS.build(dict(type='DeepViT', arch=TINY, img_size=32, patch_size=4)).load_state_dict(
        out, strict=True)


def test_mismatched_checkpoints_give_clear_errors():
    with pytest.raises(KeyError, match='not an official DeepViT checkpoint: unknown keys'):
        conv.convert_deepvit({'layer1.0.conv1.weight': torch.zeros(1)})
    sd = official_state_dict(24, 3, 72, 3, [1, 2], True, 4, 32)
    converted = conv.convert_deepvit(sd)
    with pytest.raises(KeyError, match='do not fit DeepViT arch'):
        conv.check_loadable(converted, dict(TINY, reattention_last_k=1), img_size=32,
                            patch_size=4)
    with pytest.raises(KeyError, match='matches no DeepViT arch'):
        conv.infer_arch(sd)


def test_cli_converts_official_deepvit_s_and_rejects_wrong_arch(tmp_path, capsys):
    sd = official_state_dict(396, 16, 1188, 12, list(range(11, 16)), True, 16, 224,
                             num_classes=1000, zeros=True)
    assert conv.infer_arch(sd) == dict(name='deepvit-s')
    src = tmp_path / 'official.pth.tar'
    torch.save(dict(epoch=1, state_dict=sd, args=argparse.Namespace(model='deepvit_S')), src)
    dst = tmp_path / 'converted.pth'
    conv.main([str(src), str(dst)])
    assert 'deepvit-s' in capsys.readouterr().out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['arch'] == 'deepvit-s'
    assert 'backbone.layers.15.attn.reattention.var_norm.running_var' in saved['state_dict']
    with pytest.raises(SystemExit):
        conv.main([str(src), str(dst), '--arch', 'deepvit-16'])
    assert 'error: the converted weights do not fit DeepViT arch' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        conv.main([str(tmp_path / 'missing.pth'), str(dst)])
    assert 'does not exist' in capsys.readouterr().err
