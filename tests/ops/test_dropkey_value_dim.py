"""DropKey attention with a v head dim other than q's: every CPU path equals the reference math
``softmax(q k^T * scale + mask) v`` with the same dropped keys (issue #26, item 4)."""
import pytest
import torch

from mmvitreg.ops.dropkey import attention as attention_mod
from mmvitreg.ops.dropkey import cpu_flash, dropkey_attention
from mmvitreg.ops.dropkey.cpu_flash import pad_head_dims
from mmvitreg.ops.dropkey.flex import flex_applies, flex_available
from mmvitreg.ops.dropkey.masks import keep_mask_rows, repair_all_dropped
from mmvitreg.ops.dropkey.random import call_key

KEY = call_key(4, 2, seed=99)


def _reference(q, k, v, ratio, bias=None, scale=None):
    """Explicit masked softmax attention with the mask of ``KEY`` (host bias added)."""
    shape = q.shape[:-1] + (k.shape[-2], )
    keep = keep_mask_rows(KEY, shape, 0, shape[-2], ratio)
    allowed = None if bias is None else bias > float('-inf')
    keep = repair_all_dropped(keep, allowed)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias
    return logits.masked_fill(~keep, float('-inf')).softmax(-1) @ v


def _inputs(b, h, nq, nk, d, dv, dtype=torch.float64, bias=False):
    g = torch.Generator().manual_seed(nq * 31 + dv)
    q = torch.randn(b, h, nq, d, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(b, h, nk, d, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(b, h, nk, dv, generator=g, dtype=dtype, requires_grad=True)
    mask = None
    if bias:
        mask = torch.randn(1, h, nq, nk, generator=g, dtype=dtype)
        mask[..., -2:] = float('-inf')  # padded keys
        mask.requires_grad_(True)
    return q, k, v, mask


@pytest.fixture
def path(monkeypatch):
    """Records which path each call took: 'cpu_flash', 'chunked' or 'plain'."""
    taken = []
    real_flash = attention_mod.cpu_flash_dropkey_attention
    real_chunked = attention_mod._ChunkedDropKeyAttention.apply

    def flash(*args, **kwargs):
        taken.append('cpu_flash')
        return real_flash(*args, **kwargs)

    def chunked(*args):
        taken.append('chunked')
        return real_chunked(*args)

    monkeypatch.setattr(attention_mod, 'cpu_flash_dropkey_attention', flash)
    monkeypatch.setattr(attention_mod._ChunkedDropKeyAttention, 'apply', chunked)
    return taken


def _check(out, q, k, v, mask, ratio, scale=None, atol=1e-10):
    inputs = [t for t in (q, k, v, mask) if t is not None]
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    got = torch.autograd.grad(out, inputs, grad)
    ref = _reference(q, k, v, ratio, mask, scale)
    want = torch.autograd.grad(ref, inputs, grad)
    assert out.shape == q.shape[:-1] + (v.shape[-1], )
    torch.testing.assert_close(out, ref, atol=atol, rtol=atol)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)


@pytest.mark.parametrize('dv', [5, 24])  # narrower and wider than d = 8
@pytest.mark.parametrize('kwargs', [{}, dict(memory_budget=300), dict(chunk_size=3),
                                    dict(scale=0.7)])
def test_cpu_flash_path(path, dv, kwargs):
    q, k, v, _ = _inputs(2, 3, 10, 12, 8, dv)
    out = dropkey_attention(q, k, v, 0.4, key=KEY, **kwargs)
    assert path == ['cpu_flash']
    _check(out, q, k, v, None, 0.4, kwargs.get('scale'))


@pytest.mark.parametrize('dv', [3, 12])
def test_cpu_flash_key_ranges(path, monkeypatch, dv):
    plans = []
    real_plan = cpu_flash.plan_regions
    monkeypatch.setattr(cpu_flash, 'plan_regions',
                        lambda *a, **kw: plans.append(real_plan(*a, **kw)) or plans[-1])
    q, k, v, _ = _inputs(1, 1, 768, 1024, 8, dv, dtype=torch.float32)
    out = dropkey_attention(q, k, v, 0.3, key=KEY, memory_budget=768 * 512 * 4)
    assert path == ['cpu_flash'] and all(len(box) == 4 for box in plans[0])
    assert len(plans[0]) == 2  # two key ranges, merged by their log-sum-exps
    _check(out, q, k, v, None, 0.3, atol=1e-4)


@pytest.mark.parametrize('dv', [5, 24])
@pytest.mark.parametrize('chunk_size, expect', [(None, []), (3, ['chunked'])])
def test_sdpa_paths_with_trainable_bias(path, dv, chunk_size, expect):
    q, k, v, bias = _inputs(2, 3, 10, 12, 8, dv, bias=True)
    out = dropkey_attention(q, k, v, 0.4, key=KEY, attn_mask=bias, chunk_size=chunk_size)
    assert path == expect  # plain SDPA with the full mask, or query chunks
    _check(out, q, k, v, bias, 0.4)


@pytest.mark.parametrize('dv', [5, 24])
def test_broadcast_batch_takes_plain_sdpa(path, dv):
    q, k, v, _ = _inputs(2, 3, 10, 12, 8, dv)
    k1, v1 = k[:1].detach().requires_grad_(), v[:1].detach().requires_grad_()
    out = dropkey_attention(q, k1, v1, 0.4, key=KEY)
    assert path == []  # cpu flash needs one batch shape
    _check(out, q, k1, v1, None, 0.4)


def test_dropout_and_ratio_zero_paths_give_dv_columns():
    q, k, v, _ = _inputs(2, 3, 10, 12, 8, 5)
    for kwargs in (dict(dropout_p=0.2), dict(dropout_p=0.2, chunk_size=3)):
        out = dropkey_attention(q, k, v, 0.4, key=KEY, **kwargs)
        assert out.shape == (2, 3, 10, 5)
        assert all(g.shape == t.shape for g, t in
                   zip(torch.autograd.grad(out.sum(), (q, k, v)), (q, k, v)))
    out = dropkey_attention(q, k, v, 0.0)
    torch.testing.assert_close(out, (q @ k.transpose(-2, -1) * 8**-0.5).softmax(-1) @ v)


def test_pad_head_dims_keeps_logits_and_output_columns():
    q, k, v, _ = _inputs(1, 2, 4, 6, 3, 7)
    qp, kp, vp = pad_head_dims(q, k, v)
    assert qp.shape[-1] == kp.shape[-1] == vp.shape[-1] == 7 and vp is v
    torch.testing.assert_close(qp @ kp.transpose(-2, -1), q @ k.transpose(-2, -1))
    qp, kp, vp = pad_head_dims(q, k, v[..., :2])
    assert qp is q and kp is k and vp.shape[-1] == 3 and not vp[..., 2:].any()


def test_flex_auto_choice_checks_the_value_head_dim():
    q = torch.randn(1, 1, 4, 16)
    assert not flex_applies(q, 'random', 0.0, None, torch.randn(1, 1, 4, 32))  # CPU

    class FakeCuda:  # the same rule on a CUDA tensor, without one
        shape = q.shape
        device = torch.device('cuda')

    if flex_available():
        assert flex_applies(FakeCuda(), 'random', 0.0, None, torch.randn(1, 1, 4, 32))
        assert not flex_applies(FakeCuda(), 'random', 0.0, None, torch.randn(1, 1, 4, 24))


@pytest.mark.skipif(not flex_available(), reason='torch without FlexAttention')
@torch.no_grad()
def test_flex_forward_with_other_value_head_dim_on_cpu():
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 2, 21, 16, generator=g) for _ in range(2))
    v = torch.randn(2, 2, 21, 32, generator=g)
    fused = dropkey_attention(q, k, v, 0.3, key=KEY, backend='flex')
    torch.testing.assert_close(fused, _reference(q, k, v, 0.3), atol=1e-5, rtol=1e-5)
