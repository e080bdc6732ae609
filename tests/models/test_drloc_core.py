"""DRLoc functional core: sampling, targets, pooling, the loss variants and the lambda schedule."""
import math

import pytest
import torch
import torch.nn as nn

from mmvitreg.models.losses.drloc import (drloc_lambda, drloc_loss, gather_pair_features,
                                          pool_grid, relative_targets, sample_pair_positions,
                                          valid_grid_sizes)

# Known pairs on a non-square 3x5 grid, (row, col).
POS_A = torch.tensor([[[0, 0], [2, 4], [1, 3], [0, 4]]])
POS_B = torch.tensor([[[2, 1], [0, 0], [1, 3], [2, 0]]])


def test_targets_abs_signed_on_non_square_grid():
    signed = relative_targets(POS_A, POS_B, (3, 5), 'signed')
    assert signed.tolist() == [[[-2., -1.], [2., 4.], [0., 0.], [-2., 4.]]]
    absolute = relative_targets(POS_A, POS_B, (3, 5), 'abs')
    assert absolute.tolist() == [[[2., 1.], [2., 4.], [0., 0.], [2., 4.]]]
    assert absolute.dtype == torch.float32


def test_targets_normalized_per_axis_by_grid_size():
    # paper: t = delta / k, here with k_h = 3 rows and k_w = 5 columns
    norm = relative_targets(POS_A, POS_B, (3, 5), 'abs', normalize=True)
    expected = torch.tensor([[[2 / 3, 1 / 5], [2 / 3, 4 / 5], [0., 0.], [2 / 3, 4 / 5]]])
    assert torch.allclose(norm, expected)


def test_targets_class_bins():
    cls = relative_targets(POS_A, POS_B, (3, 5), 'class')  # shift by (H-1, W-1) = (2, 4)
    assert cls.tolist() == [[[0, 3], [4, 8], [2, 4], [0, 8]]]
    assert cls.dtype == torch.long
    wide = relative_targets(POS_A, POS_B, (3, 5), 'class', max_offset=(6, 6))
    assert wide.tolist() == [[[4, 5], [8, 10], [6, 6], [4, 10]]]
    with pytest.raises(ValueError, match='beyond the classifier range'):
        relative_targets(POS_A, POS_B, (3, 5), 'class', max_offset=2)
    with pytest.raises(ValueError, match="'abs', 'signed' or 'class'"):
        relative_targets(POS_A, POS_B, (3, 5), 'polar')


def test_sampling_respects_m_and_covers_the_whole_grid():
    gen = torch.Generator().manual_seed(0)
    pos_a, pos_b = sample_pair_positions(3, 3, 5, 300, generator=gen)
    assert pos_a.shape == pos_b.shape == (3, 300, 2)
    assert pos_a.dtype == torch.long
    for pos in (pos_a, pos_b):
        assert pos[..., 0].min() == 0 and pos[..., 0].max() == 2
        assert pos[..., 1].min() == 0 and pos[..., 1].max() == 4
        for b in range(3):  # every one of the 15 cells is drawn in every image
            cells = set((pos[b, :, 0] * 5 + pos[b, :, 1]).tolist())
            assert cells == set(range(15))
    # a and b are independent draws, and images differ
    assert not torch.equal(pos_a, pos_b)
    assert not torch.equal(pos_a[0], pos_a[1])
    one = sample_pair_positions(2, 4, 4, 1)[0]
    assert one.shape == (2, 1, 2)


def test_sampling_is_reproducible_with_a_generator():
    a = sample_pair_positions(2, 6, 4, 16, generator=torch.Generator().manual_seed(3))
    b = sample_pair_positions(2, 6, 4, 16, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_sampling_inside_valid_area():
    valid = torch.tensor([[2, 3], [4, 6]])
    pos_a, pos_b = sample_pair_positions(2, 4, 6, 400, generator=torch.Generator().manual_seed(1),
                                         valid_hw=valid)
    for pos in (pos_a, pos_b):
        assert pos[0, :, 0].max() == 1 and pos[0, :, 1].max() == 2
        assert pos[1, :, 0].max() == 3 and pos[1, :, 1].max() == 5
        assert pos.min() == 0


def test_valid_grid_sizes_from_ratios():
    ratio = torch.tensor([[1.0, 0.5], [0.3, 1.0]])
    assert valid_grid_sizes(ratio, (4, 6)).tolist() == [[4, 3], [2, 6]]
    assert valid_grid_sizes(torch.tensor([[0.01, 0.01]]), (4, 6)).tolist() == [[1, 1]]


def test_sampling_bad_input():
    with pytest.raises(ValueError, match='num_pairs must be >= 1, got 0'):
        sample_pair_positions(2, 4, 4, 0)
    with pytest.raises(ValueError, match='at least 2x2 positions, got 1x5'):
        sample_pair_positions(2, 1, 5, 8)
    with pytest.raises(ValueError, match=r'valid_hw must have shape \(2, 2\)'):
        sample_pair_positions(2, 4, 4, 8, valid_hw=torch.ones(3, 2))


def test_gather_pair_features():
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    feats = torch.cat([feats, feats + 100])  # (2, 2, 3, 4)
    pos = torch.tensor([[[0, 0], [2, 3]], [[1, 2], [0, 1]]])
    out = gather_pair_features(feats, pos)
    assert out.shape == (2, 2, 2)
    assert out[0].tolist() == [[0., 12.], [11., 23.]]
    assert out[1].tolist() == [[106., 118.], [101., 113.]]


def test_pool_grid_matches_official_pooling_and_handles_non_square():
    x = torch.randn(2, 3, 14, 14)
    official = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)(x)
    assert torch.allclose(pool_grid(x, 7, 'overlap'), official)
    assert pool_grid(torch.randn(1, 3, 14, 21), 7).shape[-2:] == (7, 7)
    assert pool_grid(torch.randn(1, 3, 16, 9), 7).shape[-2:] == (6, 5)  # at most k per axis
    assert pool_grid(torch.randn(1, 3, 16, 9), 7, 'adaptive').shape[-2:] == (7, 7)
    small = torch.randn(1, 3, 5, 6)
    assert pool_grid(small, 7) is small
    assert pool_grid(small, None) is small
    with pytest.raises(ValueError, match='pool_mode must be one of'):
        pool_grid(x, 7, 'max')


def test_l1_losses_hand_computed():
    pred = torch.tensor([[1., 2.], [0., 0.]])
    target = torch.tensor([[0., 0.], [1., -1.]])
    # (|1| + |2| + |-1| + |1|) / 4
    assert drloc_loss(pred, target, 'l1').item() == pytest.approx(1.25)
    assert drloc_loss(pred, target, 'l1_signed').item() == pytest.approx(1.25)


@pytest.mark.parametrize('variant, mode', [('l1', 'abs'), ('l1_signed', 'signed')])
def test_l1_zero_for_perfect_predictor(variant, mode):
    pos_a, pos_b = sample_pair_positions(4, 3, 7, 32, generator=torch.Generator().manual_seed(0))
    target = relative_targets(pos_a, pos_b, (3, 7), mode).flatten(0, 1)
    assert drloc_loss(target.clone(), target, variant).item() == 0.0
    assert drloc_loss(target + 0.5, target, variant).item() == pytest.approx(0.5)


def test_ce_loss_hand_computed():
    row = torch.tensor([[0., math.log(2.), 0.]])  # p(target=1) = 2/4
    col = torch.tensor([[0., 0.]])  # p(target=0) = 1/2
    target = torch.tensor([[1, 0]])
    assert drloc_loss((row, col), target, 'ce').item() == pytest.approx(2 * math.log(2.))
    # uniform logits over 3 and 5 bins: log 3 + log 5
    value = drloc_loss((torch.zeros(2, 3), torch.zeros(2, 5)), torch.tensor([[0, 4], [2, 1]]),
                       'ce')
    assert value.item() == pytest.approx(math.log(3.) + math.log(5.), rel=1e-6)


def test_gaussian_loss_hand_computed():
    # uniform over bins {0, 1, 2}: mean 1, variance 2/3.
    logits = torch.zeros(1, 3)
    # row target 0: (1 - 0)^2 / (2/3) + 1e-3 * log(2/3); col target 1: 0 + 1e-3 * log(2/3)
    expected = 1.5 + 2e-3 * math.log(2 / 3)
    value = drloc_loss((logits, logits), torch.tensor([[0, 1]]), 'gaussian')
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert drloc_loss((logits, logits), torch.tensor([[0, 1]]), 'cbr').item() == value.item()
    heavier = drloc_loss((logits, logits), torch.tensor([[0, 1]]), 'gaussian', var_weight=1.0)
    assert heavier.item() == pytest.approx(1.5 + 2 * math.log(2 / 3), rel=1e-5)


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"DRLoc variant must be one of \['l1', 'l1_signed', "
                       r"'ce', 'gaussian'\].*got 'l2'"):
        drloc_loss(torch.zeros(1, 2), torch.zeros(1, 2), 'l2')


def test_lambda_official_warmup_decay():
    values = [drloc_lambda(0.5, e, 100, 20) for e in (0, 10, 20, 60, 100, 120)]
    assert values == pytest.approx([0.0, 0.25, 0.5, 0.25, 0.0, 0.0])
    assert drloc_lambda(0.5, 55, 100, 20, schedule='constant') == 0.5
    assert drloc_lambda(0.5, 55, 100, 20, schedule=None) == 0.5
    with pytest.raises(ValueError, match='lambda\\) must be >= 0, got -0.1'):
        drloc_lambda(-0.1, 0, 100)
    with pytest.raises(ValueError, match='weight schedule must be'):
        drloc_lambda(0.1, 0, 100, schedule='cosine')
