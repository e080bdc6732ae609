import pytest
import torch

import mmvitreg  # noqa: F401
from mmvitreg.engine.hooks.attention_collapse_hook import AttentionCollapseHook, collapse_summary
from mmvitreg.registry import MODELS
from mmvitreg.utils.attention_maps import (SimilarityAccumulator, cls_attention_grid,
                                           collect_attention_maps, cross_layer_similarity,
                                           format_similarity, save_similarity_heatmap)

TINY_VIT = dict(type='VisionTransformer',
                arch=dict(embed_dims=32, num_layers=3, num_heads=4, feedforward_channels=64),
                img_size=16, patch_size=4)


def test_identical_layers_have_similarity_one_and_matrix_is_symmetric():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 6, 6).softmax(-1)
    b = torch.rand(2, 3, 6, 6).softmax(-1)
    sim = cross_layer_similarity([a, b, a.clone()])
    assert sim.shape == (3, 3, 3)
    assert torch.allclose(sim, sim.transpose(0, 1))
    assert torch.allclose(sim[0, 2], torch.ones(3), atol=1e-6)
    assert torch.allclose(torch.diagonal(sim, dim1=0, dim2=1), torch.ones(3, 3), atol=1e-6)
    assert (sim[0, 1] < 0.999).all()
    assert cross_layer_similarity([a, b], reduce_heads=True).shape == (2, 2)


def test_similarity_uses_columns_per_head_per_token():
    # layer q only permutes the queries (rows) of layer p: columns keep their entries but in a
    # different order, so the column cosine is < 1 although every row is a valid distribution
    a = torch.eye(4)[None, None] * 0.7 + 0.075
    b = a[:, :, [1, 0, 2, 3]]
    expected = torch.nn.functional.cosine_similarity(a, b, dim=-2).mean()
    assert torch.allclose(cross_layer_similarity([a, b])[0, 1, 0], expected)
    with pytest.raises(ValueError, match='all layers must match'):
        cross_layer_similarity([a, torch.rand(1, 1, 3, 3)])


def test_accumulator_weights_batches_by_images():
    maps1 = [torch.rand(1, 2, 5, 5), torch.rand(1, 2, 5, 5)]
    maps3 = [torch.rand(3, 2, 5, 5), torch.rand(3, 2, 5, 5)]
    acc = SimilarityAccumulator()
    acc.update(maps1)
    acc.update(maps3)
    joint = cross_layer_similarity([torch.cat([x, y]) for x, y in zip(maps1, maps3)])
    assert torch.allclose(acc.result(), joint, atol=1e-6)
    assert acc.count == 4


@pytest.mark.parametrize('reattention', [None, dict(last_k=1)])
def test_collect_maps_from_vit_and_reattention(reattention):
    cfg = dict(TINY_VIT)
    if reattention:
        cfg = dict(cfg, type='Regularized', host='VisionTransformer', reattention=reattention)
    model = MODELS.build(cfg)
    maps = collect_attention_maps(model, torch.randn(2, 3, 16, 16))
    assert len(maps) == 3 and maps[0].shape == (2, 4, 17, 17)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 17), atol=1e-5)  # plain softmax
    sim = cross_layer_similarity(maps, reduce_heads=True)
    assert sim.shape == (3, 3)
    assert 'adjacent' in collapse_summary(sim)


def test_collect_maps_from_timm_vit():
    timm = pytest.importorskip('timm')
    model = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32,
                              patch_size=8, depth=2)
    maps = collect_attention_maps(model, torch.randn(1, 3, 32, 32))
    assert [m.shape for m in maps] == [(1, 3, 17, 17)] * 2


def test_heatmap_grid_and_text(tmp_path):
    sim = torch.rand(4, 4, 2)
    path = save_similarity_heatmap(sim, str(tmp_path / 'sim.png'))
    assert (tmp_path / 'sim.png').stat().st_size > 1000 and path.endswith('sim.png')
    assert len(format_similarity(sim).splitlines()) == 5
    attn = torch.rand(2, 3, 17, 17)
    grid = cls_attention_grid(attn, (4, 4), 1)
    assert grid.shape == (2, 4, 4)
    assert torch.allclose(grid[0, 0, 1], attn[0, :, 0, 2].mean())
    with pytest.raises(ValueError, match='does not fit a 3x3 grid'):
        cls_attention_grid(attn, (3, 3), 1)


def test_hook_arguments_are_checked():
    with pytest.raises(ValueError, match='num_batches must be an integer >= 1, got 0'):
        AttentionCollapseHook(num_batches=0)
    with pytest.raises(ValueError, match="stage must be 'reattention' or 'softmax'"):
        AttentionCollapseHook(stage='logits')
