"""The ``reattention`` key on every attention host (not only mmpretrain ViTs)."""
import copy

import pytest
import torch
from mmengine.registry import DefaultScope

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.reattention import (HeadMixing, attach_reattention,
                                               reattention_layer_indices, select_layers)


def test_select_layers():
    assert select_layers(4, None, None) == [0, 1, 2, 3]
    assert select_layers(4, 2, None) == [2, 3]
    assert select_layers(4, None, [-1, 0, 0]) == [0, 3]
    with pytest.raises(ValueError, match='either `last_k` or `layers`, not both'):
        select_layers(4, 1, [0])
    with pytest.raises(ValueError, match='layer index 4 is out of range for 4 attention layers'):
        select_layers(4, None, [4])


def test_timm_vit_gets_reattention_children_and_keeps_its_weights():
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=3, num_classes=0)
    plain = copy.deepcopy(net).eval()
    rows = attach_reattention(net, dict(last_k=2, transform_scale=True))
    assert [r[0] for r in rows] == ['blocks.1.attn', 'blocks.2.attn']
    assert reattention_layer_indices(net) == [1, 2]
    mixing = net.blocks[2].attn.reattention
    assert isinstance(mixing, HeadMixing) and mixing.num_heads == 3
    assert mixing.scale == pytest.approx(64**-0.5)  # head_dim of timm's attention
    extra = set(net.state_dict()) - set(plain.state_dict())
    assert 'blocks.2.attn.reattention.reatten_matrix.weight' in extra
    assert all('.attn.reattention.' in k for k in extra)
    x = torch.randn(2, 3, 32, 32)
    # an identity transform without norm is plain attention again
    ident = copy.deepcopy(plain)
    attach_reattention(ident, dict(transform_init='identity', norm_cfg=None))
    with torch.no_grad():
        assert torch.allclose(ident.eval()(x), plain(x), atol=1e-5)
        assert not torch.allclose(net.eval()(x), plain(x), atol=1e-4)
    net.train()
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()  # (a plain sum is constant after LN)
    assert mixing.reatten_matrix.weight.grad.abs().sum() > 0


def test_detr_layers_get_reattention_and_dropkey_together():
    from tests.models.test_dropkey_hosts import _detr_inputs, _tiny_detr_cfg
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        plain = MODELS.build(_tiny_detr_cfg())
        cfg = dict(_tiny_detr_cfg(dict(ratio=0.3, targets=['encoder'])),
                   reattention=dict(targets='decoder.cross_attn', transform_init='identity',
                                    norm_cfg=None))
        model = MODELS.build(cfg)
    model.load_state_dict(plain.state_dict(), strict=False)
    assert reattention_layer_indices(model, 'decoder.cross_attn') == [0, 1]
    assert hasattr(model.encoder.layers[0].self_attn, 'dropkey')
    x, samples = _detr_inputs()
    with torch.no_grad():
        model.eval(), plain.eval()
        out = model._forward(x, samples)[0]
        ref = plain._forward(x, samples)[0]
    assert torch.allclose(out, ref, atol=1e-4)  # identity mixing on padded cross-attention
    model.train()
    out = model._forward(x, samples)[0]
    assert torch.isfinite(out).all()
