"""DropKey masks have the paper's statistics: independent Bernoulli(p) per (sample, head, query,
key), and calibrated Block/Cross structures (mmvitreg.ops.dropkey.masks)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmvitreg.ops.dropkey import block_footprint, sample_keep_mask, seed_probability
from mmvitreg.ops.dropkey.random import call_key


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().flatten(), b.float().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_seed_probability_calibration():
    for p in (0.1, 0.5, 0.9):
        for fp in (1, 9, 5):
            assert (1 - seed_probability(p, fp))**fp == pytest.approx(1 - p)
    assert block_footprint('block', 3) == 9 and block_footprint('cross', 3) == 5
    assert block_footprint('random', 7) == 1


@pytest.mark.parametrize('variant, extra, bs', [('random', 0, 3), ('block', 1, 3), ('cross', 0, 3),
                                                ('block', 0, 2), ('cross', 2, 4)])
@pytest.mark.parametrize('ratio', [0.1, 0.5])
def test_dropped_fraction_matches_ratio(variant, extra, bs, ratio):
    keep = sample_keep_mask((4, 2, 128, 36 + extra), ratio, variant, grid_hw=(6, 6),
                            num_extra_tokens=extra, block_size=bs, key=call_key(0, 0, seed=1))
    assert keep.shape == (4, 2, 128, 36 + extra) and keep.dtype == torch.bool
    frac = 1 - keep.float().mean().item()
    tol = 5 * 0.5 / math.sqrt(1024)  # 1024 independent rows
    assert abs(frac - ratio) < tol, (frac, ratio)
    # border keys get the same rate as interior keys (seeds drawn on the padded grid)
    grid = keep[..., extra:].reshape(-1, 6, 6).float()
    corner = 1 - grid[:, 0, 0].mean().item()
    assert abs(corner - ratio) < 5 * 0.5 / math.sqrt(grid.shape[0]) + 0.02


def test_random_masks_are_independent_bernoulli():
    p, nk = 0.3, 64
    keep = sample_keep_mask((8, 4, 256, nk), p, key=call_key(0, 0, seed=2))
    drop = ~keep
    n = drop.numel()
    assert abs(drop.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    # per-row dropped counts are Binomial(nk, p): mean nk p, variance nk p (1 - p)
    counts = drop.float().sum(-1).flatten()
    var = counts.var().item()
    assert abs(var / (nk * p * (1 - p)) - 1) < 0.1, var
    # no correlation across samples, heads, queries, neighbouring keys (same 64-bit word and
    # next word) and across calls
    tol = 5 / math.sqrt(n / 2)
    assert abs(_corr(drop[0::2], drop[1::2])) < tol
    assert abs(_corr(drop[:, 0::2], drop[:, 1::2])) < tol
    assert abs(_corr(drop[:, :, 0::2], drop[:, :, 1::2])) < tol
    assert abs(_corr(drop[..., 0::2], drop[..., 1::2])) < tol
    assert abs(_corr(drop[..., :-4], drop[..., 4:])) < tol
    assert abs(_corr(drop[:, :, :-1, :], drop[:, :, 1:, :])) < tol
    other = ~sample_keep_mask((8, 4, 256, nk), p, key=call_key(0, 1, seed=2))
    assert abs(_corr(drop, other)) < tol
    assert not torch.equal(drop, other)


def _opening_is_identity(dropped: torch.Tensor, kernel: torch.Tensor) -> bool:
    """Morphological opening with ``kernel`` (outside the grid counts as dropped) returns the
    set itself iff it is a union of (clipped) copies of the kernel shape."""
    k = kernel.shape[-1]
    x = F.pad(dropped.float()[:, None], (k - 1, ) * 4, value=1.0)
    ker = kernel[None, None].float()
    eroded = (F.conv2d(x, ker) == ker.sum()).float()  # seed positions fully inside the set
    dilated = F.conv2d(eroded, ker.flip(-1, -2)) > 0
    return torch.equal(dilated[:, 0], dropped)


@pytest.mark.parametrize('variant', ['block', 'cross'])
def test_structured_masks_are_unions_of_the_shape(variant):
    k = 3
    keep = sample_keep_mask((64, 1 + 7 * 9), 0.15, variant, grid_hw=(7, 9), num_extra_tokens=1,
                            block_size=k, key=call_key(0, 0, seed=3))
    dropped = ~keep[:, 1:].view(64, 7, 9)
    if variant == 'block':
        kernel = torch.ones(k, k)
    else:
        kernel = torch.zeros(k, k)
        kernel[k // 2, :] = 1
        kernel[:, k // 2] = 1
    assert dropped.any()
    assert _opening_is_identity(dropped, kernel)
    # an i.i.d. mask of the same density is (almost surely) not such a union
    rnd = ~sample_keep_mask((64, 63), 0.15, key=call_key(0, 1, seed=3)).view(64, 7, 9)
    assert not _opening_is_identity(rnd, kernel)


@pytest.mark.parametrize('shape, kw, msg', [
    ((2, 10), dict(variant='block'), 'needs keys on an image grid'),
    ((2, 10), dict(variant='block', grid_hw=(3, 3)), 'does not match the 10 keys'),
    ((2, 10), dict(ratio=1.0), r'ratio must be in \[0, 1\), got 1.0'),
    ((10, ), dict(), r'needs \(..., queries, keys\)'),
])
def test_bad_values_raise_clear_errors(shape, kw, msg):
    kw = dict(dict(ratio=0.2), **kw)
    with pytest.raises(ValueError, match=msg):
        sample_keep_mask(shape, **kw)
