"""Where the keys lie: extra tokens declared by mmpretrain/timm/DINOv2-style models, the
``grid=dict(extra_tokens=..., size=(H, W))`` option for hosts that declare nothing, and errors
that name what is missing."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope
from timm.models.vision_transformer import Attention

import mmvitreg  # noqa: F401
from mmvitreg.ops.token_grid import TokenGrid
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import apply_regularizers
from mmvitreg.regularizers.grid import declared_extra_tokens, grid_option
from tests.regularizers.common import TINY_VIT


class DinoStyleViT(nn.Module):
    """A DINOv2-style backbone: one class token (``num_tokens``), ``num_register_tokens``
    registers, then a 4x4 patch grid, through timm attention layers."""

    def __init__(self, registers=2, declare=True, dims=16):
        super().__init__()
        if declare:
            self.num_tokens, self.num_register_tokens = 1, registers
        self.tokens = 1 + registers + 16
        self.blocks = nn.ModuleList(Attention(dims, num_heads=2) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def test_declared_extra_tokens():
    dino = DinoStyleViT(registers=4)
    assert declared_extra_tokens(dino) == 5  # class + 4 registers
    bare = nn.Module()
    bare.num_register_tokens = 4
    assert declared_extra_tokens(bare) == 4
    bare.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
    assert declared_extra_tokens(bare) == 5
    assert declared_extra_tokens(nn.Linear(2, 2)) is None
    timm = pytest.importorskip('timm')
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=1, reg_tokens=4)
    assert declared_extra_tokens(net) == 5  # timm counts class + registers in num_prefix_tokens


def test_dino_style_register_tokens_give_the_block_grid():
    torch.manual_seed(0)
    model = apply_regularizers(DinoStyleViT(), dropkey=dict(ratio=0.3, variant='block',
                                                            block_size=2))
    site = model.blocks[0].forward
    assert site.key_grid(model.tokens) == TokenGrid((4, 4), 3)
    model.train()
    out = model(torch.randn(2, model.tokens, 16))
    assert torch.isfinite(out).all()


def test_a_host_declaring_nothing_names_the_missing_piece_and_takes_the_grid_option():
    with pytest.raises(ValueError, match=r"variant 'block' needs the keys on an image grid, but "
                       r"the keys of 'blocks.0' \(Attention\) are not on a known grid: how many "
                       r'extra \(class/register\) tokens precede the patch grid is unknown: no '
                       r'enclosing module declares num_extra_tokens, num_prefix_tokens or '
                       r'num_register_tokens; give it with grid=dict\(extra_tokens=..., '
                       r'size=\(H, W\)\)'):
        apply_regularizers(DinoStyleViT(declare=False), dropkey=dict(ratio=0.3, variant='block'))
    model = apply_regularizers(DinoStyleViT(declare=False), dropkey=dict(
        ratio=0.3, variant='cross', block_size=2, grid=dict(extra_tokens=3)))
    assert model.blocks[1].forward.key_grid(model.tokens) == TokenGrid((4, 4), 3)
    model.train()
    assert torch.isfinite(model(torch.randn(2, model.tokens, 16))).all()


def test_grid_size_for_a_non_square_vit_input():
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              dropkey=dict(ratio=0.3, variant='block', block_size=2,
                                           grid=dict(size=(4, 6)))))
    model.train()
    assert torch.isfinite(model(torch.randn(2, 3, 16, 24))[0]).all()  # 1 class token + 4x6
    with pytest.raises(ValueError, match=r'grid 4x6 with 1 extra tokens does not match the 17 '
                       'keys'):
        model(torch.randn(2, 3, 16, 16))


def test_detr_encoder_with_a_fixed_feature_map_size():
    from tests.models.test_dropkey_hosts import _detr_inputs, _tiny_detr_cfg
    dropkey = dict(ratio=0.3, variant='block', block_size=1, targets=['encoder'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(ValueError, match=r"are not on a known grid: object queries or a "
                           r'flattened feature map whose size the layer does not know'):
            MODELS.build(_tiny_detr_cfg(dropkey))
        model = MODELS.build(_tiny_detr_cfg(dict(dropkey, grid=dict(size=(2, 3)))))
    model.train()
    x, samples = _detr_inputs()  # 64x96 images, stride 32: a 2x3 map
    assert model.encoder.layers[0].self_attn.forward.key_grid(6) == TokenGrid((2, 3), 0)
    assert all(torch.isfinite(t).all() for t in model._forward(x, samples)
               if isinstance(t, torch.Tensor))


@pytest.mark.parametrize('value, match', [
    (dict(extra=1), 'grid must be a dict with extra_tokens and/or size'),
    (dict(), 'grid must be a dict with extra_tokens and/or size'),
    ((4, 4), 'grid must be a dict'),
    (dict(extra_tokens=-1), 'grid extra_tokens must be an integer >= 0, got -1'),
    (dict(extra_tokens=True), 'grid extra_tokens must be an integer >= 0, got True'),
    (dict(size=(0, 4)), r'grid size must be \(H, W\) with integers >= 1, got \(0, 4\)'),
    (dict(size='14x14'), r"grid size must be \(H, W\) with integers >= 1, got '14x14'"),
])
def test_bad_grid_options(value, match):
    with pytest.raises(ValueError, match=match):
        grid_option(value, 'DropKey')
    with pytest.raises(ValueError, match=match):
        apply_regularizers(DinoStyleViT(), dropkey=dict(ratio=0.1, grid=value))


def test_call_time_error_without_a_grid_names_the_option():
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              dropkey=dict(ratio=0.3, variant='block', block_size=2)))
    model.train()
    with pytest.raises(ValueError, match=r"needs keys on an image grid, but the layout of its 25 "
                       r'keys is unknown .* dropkey grid=dict\(extra_tokens=..., size=\(H, W\)\)'):
        model(torch.randn(2, 3, 16, 24))
