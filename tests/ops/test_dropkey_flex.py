"""The fused FlexAttention path evaluates the same mask as the SDPA fallback.

On CPU torch runs FlexAttention forward only (inductor's CPU kernel: inference, no lse), so the
CPU test compares forwards; the CUDA tests (forward + backward, AMP, shapes) skip without a GPU.
"""
import pytest
import torch

from mmvitreg.ops.dropkey import DropKey, compiled, dropkey_attention
from mmvitreg.ops.dropkey.flex import flex_applies, flex_available, flex_dropkey_attention
from mmvitreg.ops.dropkey.masks import keep_mask_rows
from mmvitreg.ops.dropkey.packed import _BIT_VALUES, BITS_PER_WORD, WORD_DTYPE, packed_drop_bits
from mmvitreg.ops.dropkey.random import call_key, lane_terms
from mmvitreg.ops.dropkey.schedule import ratio_threshold

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


@torch.no_grad()
def test_fused_forward_adds_a_float_bias_like_the_fallback_on_cpu():
    """A float host mask (a relative-position bias with -inf padding, as PlainViT/Swin pass)
    is added in the score_mod; rows it masks completely are repaired as on the SDPA path."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 29, 16) for _ in range(3))
    bias = torch.randn(3, 29, 29)
    bias[:, :, -5:] = float('-inf')  # padded keys
    fused = dropkey_attention(q, k, v, 0.4, key=KEY, attn_mask=bias, backend='flex')
    fallback = dropkey_attention(q, k, v, 0.4, key=KEY, attn_mask=bias, backend='sdpa')
    torch.testing.assert_close(fused, fallback, atol=1e-5, rtol=1e-5)
    plain = dropkey_attention(q, k, v, 0.4, key=KEY, backend='sdpa')
    assert (fused - plain).abs().max() > 0.1  # the bias counted


@pytest.mark.parametrize('shape', [(2, 3, 17, 17), (1, 2, 5, 70), (2, 1, 3, 64)])
def test_packed_bits_are_the_dropped_logits(shape):
    """The fused CUDA path reads DropKey's bits packed 8 keys per byte: bit k % 8 of word
    k // 8 is set exactly where the mask generator drops logit k (Nk not a multiple of 32
    included), and a bool host mask is folded in."""
    b, h, nq, nk = shape
    keep = keep_mask_rows(KEY, shape, 0, nq, 0.3)
    allowed = torch.ones(b, 1, 1, nk, dtype=torch.bool)
    allowed[-1, ..., -3:] = False
    cols = torch.arange(nk)
    for host in (None, allowed):
        words = packed_drop_bits(KEY, shape, 0.3, torch.device('cpu'), host)
        assert words.dtype == WORD_DTYPE and words.shape == (b, h, nq, -(-nk // BITS_PER_WORD))
        dropped = ((words[..., cols // BITS_PER_WORD] >> (cols % BITS_PER_WORD)) & 1) != 0
        expected = ~keep if host is None else ~(keep & host)
        assert torch.equal(dropped, expected)


def test_compiled_packing_loop_equals_eager():
    """The compiled loop that packs the bits (used on every CUDA call) gives the eager bits."""
    shape = (2, 2, 9, 96)
    rows = torch.arange(36, dtype=torch.int64)
    row_term, col_term, shift = lane_terms(KEY, rows, 96)
    args = (row_term.view(2, 2, 9, 1), col_term, shift, torch.tensor(ratio_threshold(0.3)),
            torch.tensor(_BIT_VALUES))
    eager = torch.empty(2, 2, 9, 96 // BITS_PER_WORD, dtype=WORD_DTYPE)
    compiled.pack_dropped(*args, eager)
    out = torch.empty_like(eager)
    assert compiled.compiled_pack_dropped(*args, out) is not None
    assert torch.equal(out, eager)
    assert torch.equal(eager, packed_drop_bits(KEY, shape, 0.3, torch.device('cpu')))


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


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('source', ['bits', 'hash'])
def test_cuda_trainable_bias_and_padding_equal_fallback(source):
    """Both mask sources, a trainable float bias (its gradient from FlexAttention) and a bool
    key padding give the SDPA path's outputs and gradients."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 150, 32, device='cuda', requires_grad=True) for _ in range(3))
    bias = torch.randn(4, 150, 150, device='cuda', requires_grad=True)
    pad = torch.ones(2, 1, 1, 150, dtype=torch.bool, device='cuda')
    pad[1, ..., -40:] = False
    for mask in (bias, pad):
        results = []
        for backend in ('flex', 'sdpa'):
            if backend == 'flex':
                out = flex_dropkey_attention(q, k, v, 0.3, KEY, attn_mask=mask,
                                             mask_source=source)
            else:
                out = dropkey_attention(q, k, v, 0.3, key=KEY, attn_mask=mask, backend='sdpa')
            inputs = (q, k, v) + ((bias, ) if mask is bias else ())
            results.append((out, ) + torch.autograd.grad(out.sum(), inputs))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
