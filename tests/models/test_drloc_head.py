"""DRLocHead: the heads and losses of DRLoc (the ``drloc`` key on host models is tested in
``tests/regularizers/test_drloc.py``)."""
import pytest
import torch
from mmengine.logging import MessageHub

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.drloc_head import DRLocHead
from mmvitreg.models.losses.drloc import drloc_loss


def position_map(batch, height, width):
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1).expand(batch, 1, -1,
                                                                                   width)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width).expand(batch, 1, height,
                                                                                 -1)
    return torch.cat([rows, cols], dim=1)


@pytest.mark.parametrize('variant', ['l1', 'l1_signed'])
def test_perfect_predictor_gives_zero_loss(variant):
    """Hand-set MLP computing |a - b| (or a - b) from (row, col) features: loss exactly 0."""
    head = DRLocHead(in_channels=2, num_pairs=16, variant=variant, loss_weight=1.0,
                     hidden_dims=(4, 4))
    diff = torch.tensor([[1., 0., -1., 0.], [0., 1., 0., -1.], [-1., 0., 1., 0.],
                         [0., -1., 0., 1.]])  # relu -> [d, -d] split into positive parts
    sign = 1. if variant == 'l1' else -1.
    with torch.no_grad():
        head.mlp[0].weight.copy_(diff)
        head.mlp[2].weight.copy_(torch.eye(4))
        head.mlp[4].weight.copy_(torch.tensor([[1., 0., sign, 0.], [0., 1., 0., sign]]))
        for i in (0, 2, 4):
            head.mlp[i].bias.zero_()
    feats = position_map(3, 3, 6)  # non-square grid
    loss = head.loss(feats, generator=torch.Generator().manual_seed(0))['loss_drloc']
    assert loss.item() == 0.0
    # a wrong sign convention is not a perfect predictor
    with torch.no_grad():
        head.mlp[4].weight[:, 2:] *= -1
    assert head.loss(feats)['loss_drloc'].item() > 0.1


def test_head_value_matches_core_and_lambda():
    head = DRLocHead(in_channels=8, num_pairs=5, variant='l1', loss_weight=0.3)
    feats = torch.randn(2, 8, 4, 3)
    pred, target = head(feats, generator=torch.Generator().manual_seed(0))
    assert pred.shape == target.shape == (10, 2)
    loss = head.loss(feats, generator=torch.Generator().manual_seed(0))['loss_drloc']
    assert loss.item() == pytest.approx(0.3 * drloc_loss(pred, target, 'l1').item(), rel=1e-6)


@pytest.mark.parametrize('variant', ['ce', 'gaussian'])
def test_classification_heads_non_square_bins(variant):
    head = DRLocHead(in_channels=8, num_pairs=4, variant=variant, grid_size=(3, 5),
                     use_abs=False)
    (row, col), target = head(torch.randn(2, 8, 3, 5))
    assert row.shape == (8, 5) and col.shape == (8, 9)  # 2*3-1 and 2*5-1 signed offsets
    assert target.dtype == torch.long and target[:, 0].max() <= 4 and target[:, 1].max() <= 8
    assert torch.isfinite(head.loss(torch.randn(2, 8, 3, 5))['loss_drloc'])
    # smaller grids reuse the same bins (zero offset stays bin g-1); bigger ones are refused
    assert torch.isfinite(head.loss(torch.randn(2, 8, 2, 2))['loss_drloc'])
    with pytest.raises(ValueError, match='beyond the classifier range'):
        head.loss(torch.randn(2, 8, 4, 5))
    pooled = DRLocHead(in_channels=8, variant=variant, pool_size=7, use_abs=False)
    assert pooled.row_fc.out_features == 13


def test_pooling_in_head():
    head = DRLocHead(in_channels=4, num_pairs=64, pool_size=7)
    _, target = head(torch.randn(1, 4, 14, 28))
    assert target[:, 0].max() <= 6 and target[:, 1].max() <= 6


def test_head_bad_values():
    with pytest.raises(ValueError, match=r'num_pairs must be an integer in \[1, 4096\].* got 0'):
        DRLocHead(in_channels=8, num_pairs=0)
    with pytest.raises(ValueError, match="variant must be one of .* got 'mse'"):
        DRLocHead(in_channels=8, variant='mse')
    with pytest.raises(ValueError,
                       match=r'loss_weight \(lambda\) must be a finite number >= 0, got -1'):
        DRLocHead(in_channels=8, loss_weight=-1)
    with pytest.raises(ValueError, match='pool_size must be an int >= 2'):
        DRLocHead(in_channels=8, pool_size=1)
    with pytest.raises(ValueError, match="'ce' needs out_dim, grid_size or pool_size"):
        DRLocHead(in_channels=8, variant='ce')
    with pytest.raises(ValueError, match="weight_schedule type must be 'constant' or"):
        DRLocHead(in_channels=8, weight_schedule=dict(type='cosine'))
    head = DRLocHead(in_channels=8)
    with pytest.raises(ValueError, match='at least 2x2 positions, got 1x6'):
        head.loss(torch.randn(2, 8, 1, 6))
    with pytest.raises(ValueError, match='expects a \\(B, C, H, W\\) map'):
        head.loss(torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match='built for in_channels=8, got a map with 4'):
        head.loss(torch.randn(2, 4, 3, 3))


def test_weight_schedule_reads_runner_progress():
    head = DRLocHead(in_channels=4, loss_weight=0.5,
                     weight_schedule=dict(type='warmup_decay', warmup=20))
    hub = MessageHub.get_instance('drloc_schedule_test')
    assert MessageHub.get_current_instance() is hub
    assert head.current_weight() == 0.5  # no runtime info yet: full weight
    hub.update_info('max_epochs', 100)
    for epoch, expected in ((0, 0.0), (10, 0.25), (20, 0.5), (60, 0.25)):
        hub.update_info('epoch', epoch)
        assert head.current_weight() == pytest.approx(expected)
    hub.update_info('epoch', 0)
    assert head.loss(torch.randn(2, 4, 3, 3))['loss_drloc'].item() == 0.0
    by_iter = DRLocHead(in_channels=4, loss_weight=1.0,
                        weight_schedule=dict(warmup=100, by_epoch=False))
    hub.update_info('iter', 50)
    hub.update_info('max_iters', 1000)
    assert by_iter.current_weight() == pytest.approx(0.5)
