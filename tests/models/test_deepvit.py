import pytest
import torch
from mmpretrain.models.utils.attention import MultiheadAttention

import mmvitreg  # noqa: F401
from mmvitreg.models.backbones.deepvit import DeepViT, DeepViTConvStem, DeepViTLayer
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.reattention import reattention_layer_indices


def _num_params(arch, **backbone_kwargs):
    """Parameters of the classifier with a 1000-class head, the official convention."""
    dim = DeepViT.arch_zoo[arch]['embed_dims']
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='DeepViT', arch=arch, **backbone_kwargs),
        head=dict(type='VisionTransformerClsHead', num_classes=1000, in_channels=dim)))
    return sum(p.numel() for p in model.parameters())


# Official parameter counts (zhoudaquan/dvit_repo README / paper tables).
@pytest.mark.parametrize('arch,millions', [
    ('deepvit-16', 24.43), ('deepvit-24', 36.26), ('deepvit-32', 48.10),
    ('deepvit-s', 27.31), ('deepvit-l', 58.88),
])
def test_parameter_counts_match_official(arch, millions):
    assert round(_num_params(arch) / 1e6, 2) == millions


def test_plain_vit_counterpart_only_lacks_the_head_transforms():
    # re-attention adds H*H + H (conv) + 2H (BN affine) = 180 parameters per block at 12 heads
    assert _num_params('deepvit-16') - _num_params('deepvit-16', reattention=False) == 16 * 180


def test_arch_layout():
    s = MODELS.build(dict(type='DeepViT', arch='deepvit-s'))
    assert reattention_layer_indices(s) == list(range(11, 16))
    assert isinstance(s.patch_embed, DeepViTConvStem) and s.patch_resolution == (14, 14)
    assert all(isinstance(layer, DeepViTLayer) and layer.residual_scale == 0.5
               for layer in s.layers)
    assert s.layers[15].attn.reattention.scale == pytest.approx(33**-0.5)  # transform_scale
    assert type(s.layers[15].attn) is MultiheadAttention
    assert 'reattention' not in s.layers[10].attn._modules
    pure = MODELS.build(dict(type='DeepViT', arch='deepvit-16'))
    assert reattention_layer_indices(pure) == list(range(16))
    assert pure.layers[0].residual_scale == 1.0 and pure.layers[0].attn.reattention.scale == 1.0
    assert pure.layers[0].ln1.eps == 1e-6


TINY = dict(embed_dims=24, num_layers=3, num_heads=3, feedforward_channels=48,
            reattention_last_k=1, residual_scale=0.5, stem='conv')


def test_forward_shapes_and_dynamic_resolution():
    model = MODELS.build(dict(type='DeepViT', arch=TINY, img_size=32, patch_size=4,
                              out_type='featmap'))
    model.eval()  # mmpretrain backbones' train() returns None
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 24, 8, 8)
    assert model(torch.randn(1, 3, 48, 48))[0].shape == (1, 24, 12, 12)


def test_residual_scale_equals_official_formula():
    torch.manual_seed(0)
    model = MODELS.build(dict(type='DeepViT', arch=TINY, img_size=32, patch_size=4,
                              reattention=False))
    model.eval()
    layer = model.layers[0]
    x = torch.randn(2, 5, 24)
    y = x + layer.attn(layer.ln1(x * 0.5)) / 0.5
    y = y + layer.ffn.layers(layer.ln2(y * 0.5)) / 0.5
    assert torch.allclose(layer(x), y, atol=1e-6)
    layer.residual_scale = 1.0  # plain pre-norm block
    y = x + layer.attn(layer.ln1(x))
    assert torch.allclose(layer(x), y + layer.ffn.layers(layer.ln2(y)), atol=1e-6)


def test_reattention_override_and_training_step():
    model = MODELS.build(dict(type='DeepViT', arch=TINY, img_size=32, patch_size=4,
                              reattention=dict(layers=[0], norm_cfg=None)))
    assert reattention_layer_indices(model) == [0]
    assert not hasattr(model.layers[0].attn.reattention.var_norm, 'weight')
    model.init_weights()
    assert model.cls_token.abs().sum() > 0  # trunc-normal, as in the official code
    model.train()
    # squared: the output features are layer-normed, so their plain sum has zero gradient
    model(torch.randn(2, 3, 32, 32))[0].square().sum().backward()
    assert model.layers[0].attn.reattention.reatten_matrix.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="DeepViT arch must be one of"):
        DeepViT(arch='deepvit-xl')
    with pytest.raises(ValueError, match='custom arch needs a dict with keys'):
        DeepViT(arch=dict(embed_dims=24))
    with pytest.raises(ValueError, match="stem must be 'patch' or 'conv'"):
        DeepViT(arch=dict(TINY, stem='hybrid'), img_size=32, patch_size=4)
    with pytest.raises(ValueError, match='even patch_size'):
        DeepViTConvStem(patch_size=3)


def test_frozen_stages_freeze_the_conv_stem():
    model = DeepViT(arch=TINY, img_size=32, patch_size=4, frozen_stages=1)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert 'reattention' in model.layers[2].attn._modules
