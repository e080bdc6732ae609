"""The fused FlexAttention path evaluates the same mask as the SDPA fallback.

On CPU torch runs FlexAttention forward only (inductor's CPU kernel: inference, no lse), so the
CPU test compares forwards; the CUDA tests (forward + backward, AMP, shapes) skip without a GPU.
"""
import pytest
import torch

from mmvitreg.ops.dropkey import DropKey, dropkey_attention
from mmvitreg.ops.dropkey.flex import flex_applies, flex_available
from mmvitreg.ops.dropkey.masks import keep_mask_rows
from mmvitreg.ops.dropkey.random import call_key

pytestmark = pytest.mark.skipif(not flex_available(), reason='torch without FlexAttention')
CUDA = torch.cuda.is_available()
KEY = call_key(1, 0, seed=77)


def test_auto_backend_choice_on_cpu():
    q = torch.randn(1, 2, 8, 16)
    assert not flex_applies(q, 'random', 0.0, None)  # CPU: SDPA fallback
    m = DropKey(0.3).train()
    assert m.backend == 'auto'
    m(q, q, q)  # runs without compiling anything


@torch.no_grad()
def test_fused_forward_equals_fallback_on_cpu():
    torch.manual_seed(0)
    for n, ratio, with_mask in ((37, 0.3, False), (50, 0.9, True), (61, 0.5, True)):
        q, k, v = (torch.randn(2, 3, n, 16) for _ in range(3))
        mask = None
        if with_mask:  # DETR-style key padding: sample 1 has 10 padded keys
            mask = torch.ones(2, 1, 1, n, dtype=torch.bool)
            mask[1, ..., -10:] = False
        fused = dropkey_attention(q, k, v, ratio, key=KEY, attn_mask=mask, backend='flex')
        fallback = dropkey_attention(q, k, v, ratio, key=KEY, attn_mask=mask, backend='sdpa')
        torch.testing.assert_close(fused, fallback, atol=1e-5, rtol=1e-5)
    assert with_mask and torch.isfinite(fused).all()


def test_flex_refuses_additive_masks():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match='supports bool host masks only'):
        dropkey_attention(q, q, q, 0.3, attn_mask=torch.zeros(1, 1, 4, 4), backend='flex')


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_fused_equals_fallback_forward_and_backward(dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 197, 64, device='cuda', dtype=dtype, requires_grad=True)
               for _ in range(3))
    outs, grads = [], []
    for backend in ('flex', 'sdpa'):
        out = dropkey_attention(q, k, v, 0.3, key=KEY, backend=backend)
        g = torch.autograd.grad(out.float().sum(), (q, k, v))
        outs.append(out.float())
        grads.append([t.float() for t in g])
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(outs[0], outs[1], **tol)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)
    # same bits as the CPU generator
    keep_gpu = keep_mask_rows(KEY, (2, 4, 197, 197), 0, 197, 0.3, device='cuda')
    keep_cpu = keep_mask_rows(KEY, (2, 4, 197, 197), 0, 197, 0.3)
    assert torch.equal(keep_gpu.cpu(), keep_cpu)


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
def test_cuda_amp_ratio_09_padding_and_variable_shapes_finite():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 192).cuda()
    m = DropKey(0.9).train()
    for n in (100, 137, 150):
        x = torch.randn(2, n, 64, device='cuda', requires_grad=True)
        mask = torch.ones(2, 1, 1, n, dtype=torch.bool, device='cuda')
        mask[1, ..., n // 2:] = False
        with torch.autocast('cuda', dtype=torch.float16):
            q, k, v = lin(x).view(2, n, 3, 4, 16).permute(2, 0, 3, 1, 4)
            out = m(q, k, v, attn_mask=mask)
        out.float().sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
