"""The ``attention_cosine`` key: DeepViT's cosine regularizer on a host's attention maps."""
import pytest
import torch
import torch.nn.functional as F

import mmvitreg  # noqa: F401
from mmvitreg.models import Regularized

TINY_VIT = dict(type='VisionTransformer', arch=dict(embed_dims=32, num_layers=4, num_heads=4,
                                                    feedforward_channels=64),
                img_size=16, patch_size=4, drop_path_rate=0.0)


def _classifier(**regularizers):
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample
    DefaultScope.get_instance('test-cosine', scope_name='mmpretrain')
    model = Regularized(host='ImageClassifier', backbone=dict(TINY_VIT), neck=None,
                        head=dict(type='VisionTransformerClsHead', num_classes=5,
                                  in_channels=32), **regularizers)
    samples = [DataSample().set_gt_label(i) for i in range(3)]
    return model, samples


def _official_maps(model, x):
    """Softmax maps of every layer recomputed from its input and qkv weights (official math)."""
    inputs = []
    hooks = [layer.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
             for layer in model.backbone.layers]
    model.extract_feat(x)
    for h in hooks:
        h.remove()
    maps = []
    for layer, h in zip(model.backbone.layers, inputs):
        attn = layer.attn
        B, N, _ = h.shape
        q, k, _ = attn.qkv(h).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        maps.append(((q @ k.transpose(-2, -1)) * attn.head_dims**-0.5).softmax(-1))
    return maps


def test_loss_equals_the_official_formula_and_trains_the_first_layers():
    torch.manual_seed(0)
    model, samples = _classifier(attention_cosine=dict(component=2, weight=0.1))
    model.train()
    x = torch.randn(3, 3, 16, 16)
    losses = model.loss(x, samples)
    with torch.no_grad():
        maps = _official_maps(model, x)
    expected = 0.1 / 2 * sum(F.cosine_similarity(maps[i], maps[i + 1], dim=1).mean()
                             for i in range(2))
    assert torch.allclose(losses['loss_attention_cosine'], expected, atol=1e-6)
    losses['loss_attention_cosine'].backward()
    qkv_grads = [layer.attn.qkv.weight.grad for layer in model.backbone.layers]
    assert all(g is not None and g.abs().sum() > 0 for g in qkv_grads[:3])
    assert qkv_grads[3] is None  # layer 3 is beyond component + 1 layers
    # evaluation is the host's own
    model.eval()
    assert 'loss_attention_cosine' not in str(model.predict(x)[0])


def test_needs_component_and_enough_layers():
    with pytest.raises(KeyError, match='needs `component`'):
        _classifier(attention_cosine=dict(weight=0.1))
    with pytest.raises(ValueError, match='needs 5 attention layers'):
        _classifier(attention_cosine=dict(component=4))


def test_composes_with_reattention_maps_after_head_mixing():
    torch.manual_seed(0)
    model, samples = _classifier(reattention=dict(last_k=2),
                                 attention_cosine=dict(component=3))
    model.train()
    losses = model.loss(torch.randn(3, 3, 16, 16), samples)
    value = losses['loss_attention_cosine']
    assert torch.isfinite(value) and value.requires_grad
    value.backward()
    assert model.backbone.layers[3].attn.reattention.reatten_matrix.weight.grad.abs().sum() > 0
