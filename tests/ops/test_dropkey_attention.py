"""DropKey attention and module (mmvitreg.ops.dropkey): exact masked softmax on every path."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmvitreg.ops.dropkey import (DropKey, assign_layer_ids, dropkey_attention, dropkey_modules,
                                  dropkey_ratios, naive_dropkey_attention, set_dropkey_enabled,
                                  set_dropkey_sampling)
from mmvitreg.ops.dropkey.attention import FLASH_QUERY_BLOCK, MIN_KEY_CHUNK, plan_regions
from mmvitreg.ops.dropkey.masks import keep_mask_rows
from mmvitreg.ops.dropkey.random import call_key
from mmvitreg.ops.token_grid import TokenGrid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = call_key(0, 0, seed=123)


def _reference(q, k, v, keep, allowed=None, scale=None, bias=None):
    """Explicit softmax attention with the documented all-dropped-row rule."""
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
        allowed = bias > float('-inf')
    eff = keep if allowed is None else keep & allowed
    empty = ~eff.any(-1, keepdim=True)
    eff = eff | (empty if allowed is None else empty & allowed)
    return logits.masked_fill(~eff, float('-inf')).softmax(-1) @ v


def _keep(shape, ratio, key=KEY, **kw):
    return keep_mask_rows(key, shape, 0, shape[-2], ratio, **kw)


def _qkv(*shape, grad=True, nk=None):
    torch.manual_seed(0)
    b, h, n, d = shape
    nk = n if nk is None else nk
    return (torch.randn(b, h, n, d, requires_grad=grad),
            torch.randn(b, h, nk, d, requires_grad=grad),
            torch.randn(b, h, nk, d, requires_grad=grad))


# ---------------------------------------------------------------------------- schedules / errors
def test_ratio_schedules():
    assert dropkey_ratios(5, 0.4) == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert dropkey_ratios(3, 0.2, 'constant') == pytest.approx([0.2] * 3)
    assert dropkey_ratios(3, 0.3, 'increase', min_ratio=0.1) == pytest.approx([0.1, 0.2, 0.3])
    assert dropkey_ratios(1, 0.3) == [0.3]
    for n in range(2, 40):
        r = dropkey_ratios(n, 0.1)
        assert r[0] == 0.1 and r[-1] == 0.0 and min(r) >= 0.0


@pytest.mark.parametrize('call, msg', [
    (lambda: dropkey_ratios(3, 1.0), r'ratio must be in \[0, 1\), got 1.0'),
    (lambda: dropkey_ratios(3, 0.1, min_ratio=1.5), r'min_ratio must be in \[0, 1\)'),
    (lambda: dropkey_ratios(3, 0.1, 'cosine'), r"schedule must be one of .* got 'cosine'"),
    (lambda: DropKey(0.1, variant='square'), r"variant must be one of .* got 'square'"),
    (lambda: DropKey(0.1, variant='block', block_size=0), r'block_size must be an integer >= 1'),
    (lambda: DropKey(1.2), r'ratio must be in \[0, 1\), got 1.2'),
    (lambda: DropKey(0.1, backend='cuda'), r"backend must be one of .* got 'cuda'"),
    (lambda: DropKey(0.1, chunk_size=0), r'chunk_size must be an integer >= 1, got 0'),
])
def test_bad_values_raise_clear_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


# ---------------------------------------------------------------------------- attention
@pytest.mark.parametrize('budget', [None, 1 << 40, 20_000, 2_000, 300])
def test_matches_explicit_masked_softmax_in_every_chunking(budget):
    q, k, v = _qkv(2, 3, 10, 8, nk=12)
    out = dropkey_attention(q, k, v, 0.4, key=KEY, memory_budget=budget)
    keep = _keep((2, 3, 10, 12), 0.4)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = _reference(q2, k2, v2, keep)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-3)


def test_budget_chunks_only_when_the_mask_does_not_fit():
    assert len(plan_regions((256, 6, 197, 197), 5, 1 << 40)) == 1
    regions = plan_regions((256, 6, 197, 197), 5, 24 << 20)
    assert len(regions) > 1 and all(h == (0, 6) and q == (0, 197) for _, h, q in regions)
    # the largest equal batch chunks that fit
    per_sample = 6 * 197 * 197 * 5
    assert max(b1 - b0 for (b0, b1), _, _ in regions) == 256 // len(regions) + (
        256 % len(regions) > 0)
    assert max(b1 - b0 for (b0, b1), _, _ in regions) * per_sample <= 24 << 20
    # N = 4096 with one image: splits heads (groups of at least `min_heads`, the threads the
    # CPU flash backward parallelises over), then queries
    for min_heads in (1, 2):
        regions = plan_regions((1, 12, 4096, 4096), 5, 24 << 20, min_heads=min_heads)
        assert all(h1 - h0 == min_heads for _, (h0, h1), _ in regions)
        assert all((h1 - h0) * (q1 - q0) * 4096 * 5 <= 24 << 20
                   for _, (h0, h1), (q0, q1) in regions)
        covered = sum((h1 - h0) * (q1 - q0) for _, (h0, h1), (q0, q1) in regions)
        assert covered == 12 * 4096


def _volume(box):
    return math.prod(b - a for a, b in box)


def test_key_ranges_keep_query_chunks_at_the_flash_kernels_large_tiles():
    # PlainViT-B global attention under 12 MiB: query chunks would be 683 queries (the kernel's
    # 64-query tiles); key ranges keep 1024-query chunks instead
    shape, budget = (1, 12, 4096, 4096), 12 << 20
    plain = plan_regions(shape, 4, budget, min_heads=2)
    assert max(q1 - q0 for _, _, (q0, q1) in plain) < FLASH_QUERY_BLOCK
    boxes = plan_regions(shape, 4, budget, min_heads=2, split_keys=True)
    assert all(len(box) == 4 for box in boxes)
    assert all(q1 - q0 >= FLASH_QUERY_BLOCK for _, _, (q0, q1), _ in boxes)
    assert all(k0 % 4 == 0 and k1 - k0 >= MIN_KEY_CHUNK for *_, (k0, k1) in boxes)
    assert all(_volume(box) * 4 <= budget for box in boxes)
    assert sum(_volume(box) for box in boxes) == math.prod(shape)
    starts = {}
    for *rows, (k0, k1) in boxes:  # the key ranges of each row box tile [0, Nk)
        starts.setdefault(tuple(rows), []).append((k0, k1))
    for ranges in starts.values():
        assert [a for a, _ in ranges] == [0] + [b for _, b in ranges[:-1]] and ranges[-1][1] == 4096
    # where whole rows fit, or queries are few anyway, nothing changes
    assert plan_regions((2, 8, 850, 850), 4, budget, split_keys=True) == plan_regions(
        (2, 8, 850, 850), 4, budget)
    assert plan_regions((256, 6, 197, 197), 4, budget, split_keys=True) == plan_regions(
        (256, 6, 197, 197), 4, budget)


def test_key_range_boxes_give_the_exact_masked_softmax(monkeypatch):
    import mmvitreg.ops.dropkey.attention as attention
    import mmvitreg.ops.dropkey.cpu_flash as cpu_flash
    monkeypatch.setattr(cpu_flash, 'FLASH_QUERY_BLOCK', 16)
    monkeypatch.setattr(cpu_flash, 'MIN_KEY_CHUNK', 16)
    torch.manual_seed(0)
    q = torch.randn(1, 2, 40, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 2, 64, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    budget = 2 * 16 * 32 * 8
    assert all(len(box) == 4 for box in plan_regions((1, 2, 40, 64), 8, budget,
                                                     split_keys=True))
    out = dropkey_attention(q, k, v, 0.1, key=KEY, memory_budget=budget)
    ref = _reference(q, k, v, _keep((1, 2, 40, 64), 0.1))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    for got, want in zip(grads, torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    # at a ratio where a row could be all dropped within a key range, rows stay whole
    with pytest.raises(ValueError, match='key range of the DropKey mask needs all-dropped'):
        attention.MaskSpec(KEY, (1, 2, 40, 64), 0.9, 'random', None, 0, 3, None,
                           torch.device('cpu')).sdpa_mask(((0, 1), (0, 2), (0, 40), (0, 32)),
                                                          torch.float64)
    out = dropkey_attention(q, k, v, 0.9, key=KEY, memory_budget=budget)
    torch.testing.assert_close(out, _reference(q, k, v, _keep((1, 2, 40, 64), 0.9)))


def test_key_range_boxes_under_bf16_autocast(monkeypatch):
    import mmvitreg.ops.dropkey.cpu_flash as cpu_flash
    monkeypatch.setattr(cpu_flash, 'FLASH_QUERY_BLOCK', 16)
    monkeypatch.setattr(cpu_flash, 'MIN_KEY_CHUNK', 16)
    torch.manual_seed(0)
    q = torch.randn(1, 2, 40, 8, requires_grad=True)
    k, v = (torch.randn(1, 2, 64, 8, requires_grad=True) for _ in range(2))
    budget = 2 * 16 * 32 * 2  # bf16 masks: 2 bytes per logit
    assert all(len(box) == 4 for box in plan_regions((1, 2, 40, 64), 2, budget,
                                                     split_keys=True))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = dropkey_attention(q, k, v, 0.1, key=KEY, memory_budget=budget)
    assert out.dtype == torch.bfloat16
    ref = _reference(*(t.double() for t in (q, k, v)), _keep((1, 2, 40, 64), 0.1))
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_all_dropped_row_falls_back_to_plain_attention():
    q, k, v = _qkv(1, 1, 64, 4, grad=False, nk=2)
    out = dropkey_attention(q, k, v, 0.9, key=KEY)
    keep = _keep((1, 1, 64, 2), 0.9)
    empty = ~keep.any(-1)
    assert empty.sum() > 10  # p**2 = 0.81 of the rows
    plain = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[empty], plain[empty])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('budget', [None, 500])
def test_host_mask_is_respected(budget):
    q, k, v = _qkv(2, 2, 32, 4, grad=False, nk=5)
    allowed = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    allowed[1, ..., 3:] = False  # padded keys of sample 1
    v[1, :, 3:] = 1e4  # any attention to a padded key would show
    out = dropkey_attention(q, k, v, 0.8, attn_mask=allowed, key=KEY, memory_budget=budget)
    assert out[1].abs().max() < 100
    keep = _keep((2, 2, 32, 5), 0.8)
    torch.testing.assert_close(out, _reference(q, k, v, keep, allowed), atol=1e-3, rtol=1e-4)
    bias = torch.zeros(2, 1, 1, 5).masked_fill(~allowed, float('-inf'))
    out_f = dropkey_attention(q, k, v, 0.8, attn_mask=bias, key=KEY, memory_budget=budget)
    torch.testing.assert_close(out, out_f, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize('chunk', [None, 4])
def test_trainable_bias_and_dropout_path(chunk):
    """The generic path: a float bias with grads (e.g. relative positions), batch > 1."""
    q, k, v = _qkv(2, 2, 9, 4)
    bias = torch.randn(2, 2, 9, 9, requires_grad=True)
    out = dropkey_attention(q, k, v, 0.3, attn_mask=bias, key=KEY, chunk_size=chunk)
    keep = _keep((2, 2, 9, 9), 0.3)
    q2, k2, v2, b2 = (t.detach().clone().requires_grad_() for t in (q, k, v, bias))
    ref = _reference(q2, k2, v2, keep, bias=b2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2), (bias, b2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
    # attention dropout on top of DropKey: finite, chunked backward replays the dropout RNG
    out_d = dropkey_attention(q, k, v, 0.3, dropout_p=0.5, key=KEY, chunk_size=chunk)
    out_d.sum().backward()
    assert torch.isfinite(out_d).all() and torch.isfinite(q.grad).all()


def test_structured_variant_uses_the_grid():
    q, k, v = _qkv(1, 2, 17, 8, grad=False)
    out = dropkey_attention(q, k, v, 0.3, 'block', grid_hw=(4, 4), num_extra_tokens=1, key=KEY)
    keep = _keep((1, 2, 17, 17), 0.3, variant='block', grid_hw=(4, 4), num_extra_tokens=1)
    torch.testing.assert_close(out, _reference(q, k, v, keep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('variant, budget', [('random', None), ('random', 300), ('block', None)])
def test_autocast_outputs_and_grads_finite_at_ratio_09(dtype, variant, budget):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, requires_grad=True)
    lin = torch.nn.Linear(16, 48)
    m = DropKey(0.9, variant=variant, block_size=2, memory_budget=budget).train()
    with torch.autocast('cpu', dtype=dtype):
        q, k, v = lin(x).view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
        out = m(q, k, v, grid=TokenGrid((2, 2), 1))
    assert out.dtype == dtype
    out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(lin.weight.grad).all()


def test_naive_version_is_nan_in_fp16_for_fully_dropped_rows():
    """Documents the motivation: the paper's -1e12 overflows in fp16."""
    q = k = v = torch.randn(1, 1, 4, 8, dtype=torch.float16)
    out = naive_dropkey_attention(q.float(), k.float(), v.float(), 0.0)
    assert torch.isfinite(out).all()
    attn = (q @ k.transpose(-2, -1)) + torch.ones(1, 1, 4, 4, dtype=torch.float16) * -1e12
    assert torch.isnan(attn.float().softmax(-1)).all()


# ---------------------------------------------------------------------------- module
def test_module_flags_and_no_state():
    m = DropKey(0.5)
    assert list(m.state_dict()) == [] and list(m.parameters()) == [] and list(m.buffers()) == []
    q = k = v = torch.randn(1, 2, 16, 8)
    plain = F.scaled_dot_product_attention(q, k, v)
    m.eval()
    assert not m.active and torch.equal(m(q, k, v), plain)
    m.train()
    assert m.active and not torch.allclose(m(q, k, v), plain)
    m.enabled = False
    assert not m.active and torch.equal(m(q, k, v), plain)
    m.enabled = True
    m.eval()
    m.sampling = True  # Monte-Carlo sampling outside training
    assert m.active and not torch.allclose(m(q, k, v), plain)
    m.enabled = False  # enabled is the master switch
    assert not m.active
    assert not DropKey(0.0).train().active


def test_model_helpers():
    model = torch.nn.Sequential(DropKey(0.2), torch.nn.Linear(2, 2), DropKey(0.1))
    assert assign_layer_ids(model) == 2 and [m.layer_id for m in dropkey_modules(model)] == [0, 1]
    assert set_dropkey_enabled(model, False) == 2 and not any(m.enabled for m in model[::2])
    assert set_dropkey_sampling(model, True) == 2 and all(m.sampling for m in model[::2])
    wrapped = torch.nn.Module()
    wrapped.module = model  # DDP-style wrapper
    assert len(dropkey_modules(wrapped)) == 2


def test_keep_mask_is_the_mask_forward_uses():
    q, k, v = _qkv(2, 3, 17, 8, grad=False)
    allowed = torch.ones(2, 1, 1, 17, dtype=torch.bool)
    allowed[0, ..., -3:] = False
    for variant in ('random', 'cross'):
        m = DropKey(0.4, variant=variant, layer_id=2).train()
        grid = TokenGrid((4, 4), 1)
        key = m.next_key()
        keep = m.keep_mask(q, k, allowed, grid=grid, key=key)
        assert keep.shape == (2, 3, 17, 17) and keep.dtype == torch.bool
        assert not keep[0, ..., -3:].any()
        out = m(q, k, v, attn_mask=allowed, grid=grid, key=key)
        logits = (q * 8**-0.5) @ k.transpose(-2, -1)
        ref = logits.masked_fill(~keep, float('-inf')).softmax(-1) @ v
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_grid_errors_name_the_module():
    m = DropKey(0.3, variant='block', name='decoder.layers.0.self_attn').train()
    x = torch.randn(1, 1, 10, 4)
    with pytest.raises(ValueError, match=r"'block' in decoder.layers.0.self_attn needs keys on"):
        m(x, x, x)
    with pytest.raises(ValueError, match='grid 3x5 with 1 extra tokens does not match the 10'):
        m(x, x, x, grid=TokenGrid((3, 5), 1))
    DropKey(0.3).train()(x, x, x)  # random needs no grid


def test_imports_with_torch_alone():
    """``mmvitreg.ops`` needs no OpenMMLab: imported with mmengine/mmcv/mmdet/mmpretrain blocked."""
    code = (
        'import sys\n'
        "for name in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):\n"
        '    sys.modules[name] = None  # importing it raises ImportError, as if not installed\n'
        'import torch\n'
        'from mmvitreg.ops.dropkey import DropKey\n'
        'from mmvitreg.ops.token_grid import TokenGrid\n'
        'm = DropKey(0.5).train()\n'
        'x = torch.randn(1, 2, 5, 4)\n'
        'assert m(x, x, x).shape == x.shape\n'
        "print('ok', sorted(k for k, m in sys.modules.items() if m is not None and "
        "k.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')))\n")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'ok []' in res.stdout


@pytest.mark.parametrize('force_compiled', [False, True])
def test_trainable_bias_on_cpu_equals_the_where_reference(monkeypatch, force_compiled):
    """CPU with a trainable float bias (PlainViT's relative positions) takes one SDPA call with
    the bias masked in one pass; output, q/k/v and bias gradients equal softmax(where(keep,
    q k^T * s + bias, -inf)) v, the bias getting 0 where dropped (compiled loop and eager)."""
    from mmvitreg.ops.dropkey import compiled
    from mmvitreg.ops.dropkey.attention import dropkey_path
    if force_compiled:
        monkeypatch.setattr(compiled, 'MIN_LOGITS', 0)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 24, 16, requires_grad=True) for _ in range(3))
    bias = (0.5 * torch.randn(2, 3, 24, 24)).requires_grad_()
    key = call_key(3, 0, seed=5)
    assert dropkey_path(q, k, v, 0.3, attn_mask=bias) == 'sdpa'
    out = dropkey_attention(q, k, v, 0.3, key=key, attn_mask=bias)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v, bias))
    keep = keep_mask_rows(key, (2, 3, 24, 24), 0, 24, 0.3)
    logits = torch.where(keep, q @ k.transpose(-2, -1) * 16**-0.5 + bias, float('-inf'))
    ref = logits.softmax(-1) @ v
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v, bias))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert bool((grads[3][~keep] == 0).all()) and bool((grads[3][keep] != 0).any())
