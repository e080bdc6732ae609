"""Tests of the DropKey functional core and module (mmvitreg.models.layers.dropkey)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmvitreg.models.layers import dropkey as dk
from mmvitreg.models.layers.dropkey import (DropKey, block_footprint, dropkey_attention,
                                            dropkey_ratios, make_dropkey_seed, sample_keep_mask,
                                            seed_probability)


def _reference(q, k, v, keep, allowed=None, scale=None):
    """Explicit softmax attention with the documented all-dropped-row rule."""
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)
    eff = keep if allowed is None else keep & allowed
    empty = ~eff.any(-1, keepdim=True)
    eff = eff | (empty if allowed is None else empty & allowed)
    logits = logits.masked_fill(~eff, float('-inf'))
    return logits.softmax(-1) @ v


# ---------------------------------------------------------------------------- schedules / errors
def test_ratio_schedules():
    assert dropkey_ratios(5, 0.4) == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert dropkey_ratios(3, 0.2, 'constant') == pytest.approx([0.2] * 3)
    assert dropkey_ratios(3, 0.3, 'increase', min_ratio=0.1) == pytest.approx([0.1, 0.2, 0.3])
    assert dropkey_ratios(3, 0.3, 'decrease', min_ratio=0.1) == pytest.approx([0.3, 0.2, 0.1])
    assert dropkey_ratios(1, 0.3) == [0.3]
    for n in range(2, 40):  # end points exact, never below 0 by rounding
        r = dropkey_ratios(n, 0.1)
        assert r[0] == 0.1 and r[-1] == 0.0 and min(r) >= 0.0


@pytest.mark.parametrize('call, msg', [
    (lambda: dropkey_ratios(3, 1.0), r'ratio must be in \[0, 1\), got 1.0'),
    (lambda: dropkey_ratios(3, -0.1), r'ratio must be in \[0, 1\), got -0.1'),
    (lambda: dropkey_ratios(3, 0.1, min_ratio=1.5), r'min_ratio must be in \[0, 1\)'),
    (lambda: dropkey_ratios(3, 0.1, 'cosine'), r"schedule must be one of .* got 'cosine'"),
    (lambda: DropKey(0.1, variant='square'), r"variant must be one of .* got 'square'"),
    (lambda: DropKey(0.1, variant='block', block_size=0), r'block_size must be an integer >= 1'),
    (lambda: DropKey(1.2), r'ratio must be in \[0, 1\), got 1.2'),
    (lambda: sample_keep_mask((2, 10), 0.2, 'block'), r"needs grid_hw"),
    (lambda: sample_keep_mask((2, 10), 0.2, 'block', grid_hw=(3, 3)), r'does not match the 10'),
])
def test_bad_values_raise_clear_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_seed_probability_calibration():
    for p in (0.1, 0.5, 0.9):
        for fp in (1, 9, 5):
            gamma = seed_probability(p, fp)
            assert (1 - gamma)**fp == pytest.approx(1 - p)
    assert block_footprint('block', 3) == 9 and block_footprint('cross', 3) == 5
    assert block_footprint('random', 7) == 1


# ---------------------------------------------------------------------------- masks
@pytest.mark.parametrize('variant, extra, bs', [('random', 0, 3), ('block', 1, 3), ('cross', 0, 3),
                                                ('block', 0, 2), ('cross', 2, 4)])
@pytest.mark.parametrize('ratio', [0.1, 0.5])
def test_dropped_fraction_matches_ratio(variant, extra, bs, ratio):
    gen = torch.Generator().manual_seed(0)
    keep = sample_keep_mask((4, 2, 128, 36 + extra), ratio, variant, grid_hw=(6, 6),
                            num_extra_tokens=extra, block_size=bs, generator=gen)
    assert keep.shape == (4, 2, 128, 36 + extra) and keep.dtype == torch.bool
    frac = 1 - keep.float().mean().item()
    # rows (4*2*128 = 1024) are independent; per-row std <= 0.5/sqrt(#seeds ~ 36) generously
    tol = 5 * 0.5 / math.sqrt(1024)
    assert abs(frac - ratio) < tol, (frac, ratio)
    # border keys get the same rate as interior keys (seeds drawn on the padded grid)
    grid = keep[..., extra:].reshape(-1, 6, 6).float()
    corner = 1 - grid[:, 0, 0].mean().item()
    assert abs(corner - ratio) < 5 * 0.5 / math.sqrt(grid.shape[0]) + 0.02


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
    gen = torch.Generator().manual_seed(1)
    keep = sample_keep_mask((64, 1 + 7 * 9), 0.15, variant, grid_hw=(7, 9), num_extra_tokens=1,
                            block_size=k, generator=gen)
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
    rnd = ~sample_keep_mask((64, 63), 0.15, generator=gen).view(64, 7, 9)
    assert not _opening_is_identity(rnd, kernel)


def test_masks_random_across_calls_and_reproducible_for_fixed_seed():
    q = k = v = torch.randn(1, 2, 16, 8)
    torch.manual_seed(0)
    a = dropkey_attention(q, k, v, 0.5)
    b = dropkey_attention(q, k, v, 0.5)
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    a2 = dropkey_attention(q, k, v, 0.5)
    assert torch.equal(a, a2)


def test_masks_differ_across_ranks(monkeypatch):
    q = k = v = torch.randn(1, 2, 16, 8)
    outs = []
    for rank in (0, 1):
        monkeypatch.setattr(dk, '_rank', lambda r=rank: r)
        torch.manual_seed(0)  # mmengine seeds all ranks identically
        outs.append(dropkey_attention(q, k, v, 0.5))
    assert not torch.equal(outs[0], outs[1])
    torch.manual_seed(0)
    assert make_dropkey_seed(rank=0) != make_dropkey_seed(rank=0)  # advances the global RNG
    torch.manual_seed(3)
    s0 = make_dropkey_seed(rank=0)
    torch.manual_seed(3)
    assert make_dropkey_seed(rank=1) != s0


# ---------------------------------------------------------------------------- attention
def _mask_for(shape, ratio, seed, chunk=0, **kw):
    return sample_keep_mask(shape, ratio, generator=dk._generator(seed, chunk, torch.device('cpu')),
                            **kw)


def test_attention_matches_explicit_masked_softmax():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 4)
    out = dropkey_attention(q, k, v, 0.4, seed=123)
    keep = _mask_for((2, 3, 10, 12), 0.4, 123)
    assert torch.allclose(out, _reference(q, k, v, keep), atol=1e-5)
    assert not torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-3)


def test_all_dropped_row_falls_back_to_plain_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 64, 4), torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4)
    out = dropkey_attention(q, k, v, 0.9, seed=7)
    keep = _mask_for((1, 1, 64, 2), 0.9, 7)
    empty = ~keep.any(-1)
    assert empty.sum() > 10  # p**2 = 0.81 of the rows
    plain = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out[empty], plain[empty], atol=1e-6)
    assert torch.isfinite(out).all()


def test_host_mask_is_respected_and_all_dropped_falls_back_to_host_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 32, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    allowed = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    allowed[1, ..., 3:] = False  # padded keys of sample 1
    v_marked = v.clone()
    v_marked[1, :, 3:] = 1e4  # any attention to a padded key would show
    out = dropkey_attention(q, k, v_marked, 0.8, attn_mask=allowed, seed=5)
    assert out[1].abs().max() < 100
    keep = _mask_for((2, 2, 32, 5), 0.8, 5)
    assert torch.allclose(out, _reference(q, k, v_marked, keep, allowed), atol=1e-3)
    # additive float bias with -inf for the same padding gives the same result
    bias = torch.zeros(2, 1, 1, 5).masked_fill(~allowed, float('-inf'))
    out_f = dropkey_attention(q, k, v_marked, 0.8, attn_mask=bias, seed=5)
    assert torch.allclose(out, out_f, atol=1e-3)


def test_chunked_equals_unchunked_reference_including_grads():
    torch.manual_seed(0)
    B, H, N, d, chunk = 1, 2, 20, 8, 6
    q, k, v = (torch.randn(B, H, N, d, requires_grad=True) for _ in range(3))
    out = dropkey_attention(q, k, v, 0.3, seed=11, chunk_size=chunk)
    keep = torch.cat([_mask_for((B, H, min(chunk, N - s), N), 0.3, 11, i)
                      for i, s in enumerate(range(0, N, chunk))], dim=-2)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = _reference(q2, k2, v2, keep)
    assert torch.allclose(out, ref, atol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


def test_structured_variant_in_attention_uses_grid():
    torch.manual_seed(0)
    q = k = v = torch.randn(1, 2, 17, 8)
    out = dropkey_attention(q, k, v, 0.3, 'block', grid_hw=(4, 4), num_extra_tokens=1, seed=3)
    keep = _mask_for((1, 2, 17, 17), 0.3, 3, variant='block', grid_hw=(4, 4),
                     num_extra_tokens=1)
    assert torch.allclose(out, _reference(q, k, v, keep), atol=1e-5)


# ---------------------------------------------------------------------------- module
def test_module_train_eval_and_flags():
    m = DropKey(0.5)
    assert list(m.state_dict()) == [] and list(m.parameters()) == []
    q = k = v = torch.randn(1, 2, 16, 8)
    plain = F.scaled_dot_product_attention(q, k, v)
    m.eval()
    assert torch.equal(m(q, k, v), plain)
    m.train()
    assert not torch.allclose(m(q, k, v), plain)
    m.enabled = False
    assert torch.equal(m(q, k, v), plain)
    m.enabled = True
    m.eval()
    m.sampling = True
    assert not torch.allclose(m(q, k, v), plain)


def test_module_grid_inference_and_error():
    m = DropKey(0.3, variant='block').train()
    q = k = v = torch.randn(1, 1, 17, 4)  # 16 grid keys + 1 class token -> 4x4
    assert m._resolve_grid(17, None, None) == ((4, 4), 1)
    m(q, k, v)
    m.grid_hw = (3, 5)
    with pytest.raises(ValueError, match='needs keys on a 2-D grid'):
        m(torch.randn(1, 1, 10, 4), torch.randn(1, 1, 10, 4), torch.randn(1, 1, 10, 4))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('variant', ['random', 'block'])
def test_autocast_outputs_and_grads_finite(dtype, variant):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, requires_grad=True)
    lin = torch.nn.Linear(16, 48)
    m = DropKey(0.9, variant=variant, block_size=2).train()
    with torch.autocast('cpu', dtype=dtype):
        q, k, v = lin(x).view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
        out = m(q, k, v, grid_hw=(2, 2), num_extra_tokens=1)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(lin.weight.grad).all()


def test_naive_version_is_nan_in_fp16_for_fully_dropped_rows():
    """Documents the motivation: the paper's -1e12 overflows in fp16."""
    q = k = v = torch.randn(1, 1, 4, 8, dtype=torch.float16)
    torch.manual_seed(0)
    out = dk.naive_dropkey_attention(q.float(), k.float(), v.float(), 0.0)
    assert torch.isfinite(out).all()
    attn = (q @ k.transpose(-2, -1)) + torch.ones(1, 1, 4, 4, dtype=torch.float16) * -1e12
    assert torch.isnan(attn.float().softmax(-1)).all()


def test_chunked_with_trainable_bias_and_batch_matches_reference():
    """The recompute path with a float bias that needs grads (e.g. rel-pos), batch > 1."""
    torch.manual_seed(0)
    B, H, N, d, chunk = 2, 2, 9, 4, 4
    q, k, v = (torch.randn(B, H, N, d, requires_grad=True) for _ in range(3))
    bias = torch.randn(B, H, N, N, requires_grad=True)
    out = dropkey_attention(q, k, v, 0.3, attn_mask=bias, seed=2, chunk_size=chunk)
    keep = torch.cat([_mask_for((B, H, min(chunk, N - s), N), 0.3, 2, i)
                      for i, s in enumerate(range(0, N, chunk))], dim=-2)
    q2, k2, v2, b2 = (t.detach().clone().requires_grad_() for t in (q, k, v, bias))
    logits = (q2 * d**-0.5) @ k2.transpose(-2, -1) + b2
    ref = logits.masked_fill(~keep, float('-inf')).softmax(-1) @ v2
    assert torch.allclose(out, ref, atol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2), (bias, b2)):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
