"""DRLoc functional core: sampling, targets, pooling, the loss variants and the lambda schedule."""
import math

import pytest
import torch
import torch.nn as nn

from mmvitreg.models.losses.drloc import (drloc_lambda, drloc_loss, gather_pair_features, pool_grid,
                                          relative_targets, sample_pair_positions, valid_grid_sizes)

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
    with pytest.raises(ValueError, match="'abs', 'signed', 'class' or 'abs_class'"):
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


# ---------------------------------------------------------------- official options (issue 14)
# Official code (yhlleo/VTs-Drloc, drloc/aux_modules.py DenseRelativeLoc.forward):
#   deltaxy = pxs - pys;  with --use_abs: deltaxy = |deltaxy|  (bins: out_dim)
#                         without:        deltaxy = deltaxy + (H - 1)  (bins: 2 * out_dim - 1)
# and drloc/losses.py: ce  = CE(pred_x, t_x) + CE(pred_y, t_y)
#                      cbr = sum over axes of mean((mu - t)^2 / s2 + 0.001 * log s2),
#                            mu = sum_c p_c c, s2 = sum_c p_c (c - mu)^2 + 1e-8.


def test_abs_class_targets_official_use_abs():
    cls = relative_targets(POS_A, POS_B, (3, 5), 'abs_class', num_classes=(3, 5))
    assert cls.tolist() == [[[2, 1], [2, 4], [0, 0], [2, 4]]]
    assert cls.dtype == torch.long
    # official T2T/CvT/ResNet layout: out_dim = 14 bins on a 7x7 grid (|delta| <= 6)
    a, b = torch.tensor([[[6, 0]]]), torch.tensor([[[0, 6]]])
    assert relative_targets(a, b, (7, 7), 'abs_class', num_classes=14).tolist() == [[[6, 6]]]
    with pytest.raises(ValueError, match='beyond the classifier range'):
        relative_targets(POS_A, POS_B, (3, 5), 'abs_class', num_classes=4)  # |dcol| up to 4
    with pytest.raises(ValueError, match='needs num_classes'):
        relative_targets(POS_A, POS_B, (3, 5), 'abs_class')


def test_class_targets_official_out_dim_layout():
    """out_dim=14 without --use_abs on a 7x7 grid: 27 bins, targets delta + 6 (not centred)."""
    a = torch.tensor([[[0, 6], [6, 0], [3, 3]]])
    b = torch.tensor([[[6, 0], [0, 6], [3, 3]]])
    target = relative_targets(a, b, (7, 7), 'class', num_classes=2 * 14 - 1)
    # official: (pxs - pys) + (H - 1) with H = 7
    assert target.tolist() == [[[0 - 6 + 6, 6 - 0 + 6], [6 - 0 + 6, 0 - 6 + 6], [6, 6]]]
    assert target.max() <= 12  # bins 13..26 never a target
    # Swin all-layers stage 0: out_dim 56 -> 111 bins on a 28x28 grid, targets delta + 27
    a, b = torch.tensor([[[27, 0]]]), torch.tensor([[[0, 27]]])
    assert relative_targets(a, b, (28, 28), 'class', num_classes=111).tolist() == [[[54, 0]]]
    with pytest.raises(ValueError, match='beyond the classifier range'):
        relative_targets(a, b, (28, 28), 'class', num_classes=53)


def _official_ce(logits, target):
    # CE of one axis written out: mean_n (log sum_c exp(z_nc) - z_n,t_n)
    return sum(math.log(sum(math.exp(z) for z in row)) - row[t]
               for row, t in zip(logits, target)) / len(target)


def _official_cbr_axis(logits, target, lambda_var=0.001):
    total = 0.0
    for row, t in zip(logits, target):
        exps = [math.exp(z) for z in row]
        p = [e / sum(exps) for e in exps]
        mu = sum(pc * c for c, pc in enumerate(p))
        s2 = sum(pc * (c - mu)**2 for c, pc in enumerate(p)) + 1e-8
        total += math.exp(-math.log(s2)) * (mu - t)**2 + lambda_var * math.log(s2)
    return total / len(target)


@pytest.mark.parametrize('use_abs', [True, False])
def test_ce_and_cbr_over_official_bins_hand_computed(use_abs):
    gen = torch.Generator().manual_seed(5)
    pos_a, pos_b = sample_pair_positions(2, 7, 7, 3, generator=gen)
    bins = 14 if use_abs else 27
    mode = 'abs_class' if use_abs else 'class'
    target = relative_targets(pos_a, pos_b, (7, 7), mode, num_classes=bins).flatten(0, 1)
    delta = (pos_a - pos_b).flatten(0, 1)
    expected_t = delta.abs() if use_abs else delta + 6
    assert torch.equal(target, expected_t)
    row = torch.randn(6, bins, generator=gen, dtype=torch.float64)
    col = torch.randn(6, bins, generator=gen, dtype=torch.float64)
    rows, cols = row.tolist(), col.tolist()
    t_row, t_col = target[:, 0].tolist(), target[:, 1].tolist()
    ce = drloc_loss((row, col), target, 'ce').item()
    assert ce == pytest.approx(_official_ce(rows, t_row) + _official_ce(cols, t_col), rel=1e-9)
    cbr = drloc_loss((row, col), target, 'cbr').item()
    expected = _official_cbr_axis(rows, t_row) + _official_cbr_axis(cols, t_col)
    assert cbr == pytest.approx(expected, rel=1e-9)


def test_lambda_official_loop_cuts_a_300_epoch_schedule():
    """Official main.py: lambda = _weight_decay(base, epoch, 20, 300) for epoch in 0..100."""
    def official(epoch, base=0.5, warmup=20, total=300):
        if epoch <= warmup:
            return min(base / warmup * epoch, base)
        return base * (1.0 - (epoch - warmup) / (total - warmup))

    values = [drloc_lambda(0.5, e, 300, 20) for e in range(101)]
    assert values == pytest.approx([official(e) for e in range(101)], abs=1e-12)
    assert values[0] == 0.0 and values[20] == 0.5
    assert values[100] == pytest.approx(0.5 * (1 - 80 / 280))  # 0.714 * lambda at the last epoch
    # mean over the 101 trained epochs: (10.5 + 80 - 3240 / 280) / 101 = 0.7815 * lambda
    assert sum(values) / 101 == pytest.approx(0.5 * (10.5 + 80 - 3240 / 280) / 101)
    assert sum(values) / 101 / 0.5 == pytest.approx(0.7815, abs=1e-4)
