"""Masks as a pure function: the counter-based generator behind DropKey (mmvitreg.ops.dropkey)."""
import pytest
import torch

from mmvitreg.ops.dropkey import DropKey, dropkey_attention
from mmvitreg.ops.dropkey import random as dkr
from mmvitreg.ops.dropkey import set_step
from mmvitreg.ops.dropkey.attention import MaskSpec, plan_regions
from mmvitreg.ops.dropkey.masks import additive_mask_region, keep_mask_rows
from mmvitreg.ops.dropkey.random import GOLDEN, call_key, mix64, random_lanes

MASK64 = (1 << 64) - 1


def _ref_splitmix(key: int, index: int) -> int:
    """Textbook SplitMix64: output number ``index`` of the stream seeded with ``key``."""
    return mix64((key + (index + 1) * GOLDEN) & MASK64)


def test_lanes_are_splitmix64_outputs():
    key = call_key(3, 1, seed=11, step=2, rank=0)
    lanes = random_lanes(key, torch.tensor([0, 5]), 7)  # W = 2 words per row
    for i, row in enumerate((0, 5)):
        for c in range(7):
            word = _ref_splitmix(key, row * 2 + c // 4)
            want = (word >> (16 * (c % 4))) & 0xFFFF
            assert int(lanes[i, c]) & 0xFFFF == want


def test_mask_is_identical_in_any_chunking():
    key = call_key(0, 0, seed=1)
    shape = (3, 4, 23, 29)
    full = keep_mask_rows(key, shape, 0, 23, 0.4)
    parts = torch.cat([keep_mask_rows(key, shape, a, min(23, a + 5), 0.4)
                       for a in range(0, 23, 5)], dim=-2)
    assert torch.equal(full, parts)
    spec = MaskSpec(key, shape, 0.4, 'random', None, 0, 3, None, torch.device('cpu'))
    for budget in (1 << 30, 40_000, 3_000, 200):  # whole, batch, head and query boxes
        regions = plan_regions(shape, 5, budget)
        rebuilt = torch.zeros(shape, dtype=torch.bool)
        additive = torch.zeros(shape)
        for region in regions:
            (b0, b1), (h0, h1), (q0, q1) = region
            rebuilt[b0:b1, h0:h1, q0:q1] = spec.keep(region)
            additive[b0:b1, h0:h1, q0:q1] = spec.sdpa_mask(region, torch.float32)
        assert torch.equal(rebuilt, full), budget
        assert torch.equal(additive == 0, full), budget
    assert len(plan_regions(shape, 5, 200)) > 3 * 4  # the query-level split was exercised
    # key ranges (starting at multiples of 4) of any row box: the same bits
    spec = MaskSpec(key, shape, 0.1, 'random', None, 0, 3, None, torch.device('cpu'))
    additive = torch.zeros(shape)
    for k0, k1 in ((0, 12), (12, 28), (28, 29)):
        for q0, q1 in ((0, 7), (7, 23)):
            additive[:, :, q0:q1, k0:k1] = spec.sdpa_mask(((0, 3), (0, 4), (q0, q1), (k0, k1)),
                                                          torch.float32)
    assert torch.equal(additive == 0, keep_mask_rows(key, shape, 0, 23, 0.1))


def test_every_key_field_matters_including_all_63_seed_bits():
    base = dict(seed=12345, step=7, rank=0)
    ref = call_key(2, 0, **base)
    others = [
        call_key(2, 0, seed=12345 + 5 * 2**32, step=7, rank=0),  # high seed bits
        call_key(2, 0, seed=12345 + 2**62, step=7, rank=0),
        call_key(2, 0, seed=12345, step=8, rank=0),
        call_key(3, 0, **base),
        call_key(2, 1, **base),
        call_key(2, 0, seed=12345, step=7, rank=1),
    ]
    assert len(set(others + [ref])) == len(others) + 1
    shape = (2, 2, 16, 16)
    masks = [keep_mask_rows(k, shape, 0, 16, 0.5) for k in [ref] + others]
    for m in masks[1:]:
        assert not torch.equal(m, masks[0])


def test_ranks_get_different_masks(monkeypatch):
    q = k = v = torch.randn(1, 2, 16, 8)
    outs = []
    for rank in (0, 1):
        monkeypatch.setattr(dkr, 'dist_rank', lambda r=rank: r)
        torch.manual_seed(0)  # mmengine seeds every rank identically
        outs.append(DropKey(0.5).train()(q, k, v))
    assert not torch.equal(outs[0], outs[1])


def test_masks_do_not_touch_the_global_rng_and_follow_the_step():
    dkr.reset_context()
    dkr.set_seed(99)
    q = k = v = torch.randn(1, 2, 16, 8)
    m = DropKey(0.5, layer_id=4).train()
    state = torch.get_rng_state()
    set_step(10)
    a1, a2 = m(q, k, v), m(q, k, v)  # two calls in one iteration differ (call counter)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a1, a2)
    set_step(11)
    b1 = m(q, k, v)
    assert not torch.equal(a1, b1)
    # a fresh module (a resumed run) replays iteration 10 exactly
    m2 = DropKey(0.5, layer_id=4).train()
    torch.manual_seed(123)  # global RNG state is irrelevant
    set_step(10)
    assert torch.equal(m2(q, k, v), a1) and torch.equal(m2(q, k, v), a2)
    # a different layer id gives a different mask
    set_step(10)
    assert not torch.equal(DropKey(0.5, layer_id=5).train()(q, k, v), a1)
    dkr.reset_context()


def test_seed_defaults_to_torch_initial_seed():
    dkr.reset_context()
    torch.manual_seed(5)
    k5 = call_key(0, 0)
    torch.manual_seed(6)
    assert call_key(0, 0) != k5
    torch.manual_seed(5)
    assert call_key(0, 0) == k5


def test_functional_calls_without_key_are_fresh_but_reproducible():
    dkr.reset_context()
    q = k = v = torch.randn(1, 2, 16, 8)
    torch.manual_seed(0)
    set_step(0)
    a, b = dropkey_attention(q, k, v, 0.5), dropkey_attention(q, k, v, 0.5)
    assert not torch.equal(a, b)
    set_step(1)
    set_step(0)
    assert torch.equal(dropkey_attention(q, k, v, 0.5), a)
    dkr.reset_context()


def test_a_key_range_must_start_on_a_word():
    with pytest.raises(ValueError, match=r'column range \(3, 9\) of 16 columns must start at a '
                                         r'multiple of 4'):
        additive_mask_region(1, (1, 1, 4, 16), ((0, 1), (0, 1), (0, 4), (3, 9)), 0.1,
                             torch.float32)
