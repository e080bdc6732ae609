"""DeepViT cosine-similarity regularizer (official SoftTargetCrossEntropyCosReg), functional core.

Official math (zhoudaquan/dvit_repo, loss/cross_entropy.py), maps A_i of shape (B, H, N, N):
    cos_loss = sum_{i < n} CosineSimilarity(dim=1)(A_i, A_{i+1})      # (B, N, N), over heads
    term     = 0.1 * cos_loss.mean() / n
"""
import math

import pytest
import torch

from mmvitreg.models.losses.attention_cosine import OFFICIAL_WEIGHT, attention_cosine_loss


def _cos_over_heads(a, b, eps=1e-8):
    """Cosine of the head vectors a[b, :, q, k] and b[b, :, q, k], averaged over b, q, k."""
    batch, heads, n_q, n_k = a.shape
    values = []
    for i in range(batch):
        for q in range(n_q):
            for k in range(n_k):
                x = [a[i, h, q, k].item() for h in range(heads)]
                y = [b[i, h, q, k].item() for h in range(heads)]
                dot = sum(u * v for u, v in zip(x, y))
                norm = math.sqrt(sum(u * u for u in x)) * math.sqrt(sum(v * v for v in y))
                values.append(dot / max(norm, eps))
    return sum(values) / len(values)


def test_hand_computed_two_heads():
    # one image, two heads, 1x2 maps; heads are (1, 0) then (0, 1) then (1, 1) at key 0
    a0 = torch.tensor([[[[1., 0.]], [[0., 1.]]]])  # (B=1, H=2, 1, 2)
    a1 = torch.tensor([[[[0., 1.]], [[1., 1.]]]])
    a2 = torch.tensor([[[[1., 1.]], [[1., 0.]]]])
    # pair (0, 1): key 0: (1,0).(0,1) = 0; key 1: (0,1).(1,1) / sqrt(2) = 1/sqrt(2)
    # pair (1, 2): key 0: (0,1).(1,1) / sqrt(2);  key 1: (1,1).(1,0) / sqrt(2)
    pair01 = (0.0 + 1 / math.sqrt(2)) / 2
    pair12 = (1 / math.sqrt(2) + 1 / math.sqrt(2)) / 2
    value = attention_cosine_loss([a0, a1, a2], component=2)
    assert value.item() == pytest.approx(0.1 * (pair01 + pair12) / 2, rel=1e-6)
    only_first = attention_cosine_loss([a0, a1, a2], component=1)
    assert only_first.item() == pytest.approx(0.1 * pair01, rel=1e-6)


def test_matches_the_official_formula_on_random_maps():
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(2, 3, 4, 4, generator=gen).softmax(-1) for _ in range(14)]
    value = attention_cosine_loss(maps, component=12)
    expected = 0.1 * sum(_cos_over_heads(maps[i], maps[i + 1]) for i in range(12)) / 12
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # only blocks 0..12 matter: changing block 13 changes nothing
    maps[13] = torch.rand(2, 3, 4, 4, generator=gen)
    assert attention_cosine_loss(maps, component=12).item() == value.item()
    assert attention_cosine_loss(maps, component=12, weight=1.0).item() == pytest.approx(
        value.item() * 10, rel=1e-6)
    assert OFFICIAL_WEIGHT == 0.1


def test_heads_axis_not_keys_axis():
    """Identical maps up to a per-head scale still have cosine 1 over heads; permuting heads
    (same set of rows) changes it: the similarity is taken across heads."""
    base = torch.rand(1, 4, 3, 3).softmax(-1)
    assert attention_cosine_loss([base, 2 * base], 1).item() == pytest.approx(0.1, rel=1e-6)
    flipped = base.flip(1)
    assert attention_cosine_loss([base, flipped], 1).item() < 0.1 - 1e-4


def test_gradient_flows_and_pushes_layers_apart():
    a = torch.rand(2, 3, 5, 5, requires_grad=True)
    b = torch.rand(2, 3, 5, 5, requires_grad=True)
    loss = attention_cosine_loss([a, b], 1)
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the similarity
        a2 = a - 0.5 * a.grad / a.grad.norm()
    assert attention_cosine_loss([a2, b], 1).item() < loss.item()


def test_bad_input():
    maps = [torch.rand(1, 2, 3, 3) for _ in range(3)]
    with pytest.raises(ValueError, match='component must be an integer >= 1, got 0'):
        attention_cosine_loss(maps, 0)
    with pytest.raises(ValueError, match='compares blocks 0..3 but only 3 attention maps'):
        attention_cosine_loss(maps, 3)
    with pytest.raises(ValueError, match='weight must be >= 0'):
        attention_cosine_loss(maps, 1, weight=-1)
    with pytest.raises(ValueError, match='maps 0 and 1 differ in shape'):
        attention_cosine_loss([maps[0], torch.rand(1, 2, 4, 4)], 1)
