"""The compiled CPU mask loops (words, additive mask): same bits as eager, a safe fallback."""
import logging

import pytest
import torch

from mmvitreg.ops.dropkey import compiled, dropkey_attention, sample_keep_mask
from mmvitreg.ops.dropkey.masks import additive_mask_region
from mmvitreg.ops.dropkey.random import call_key, random_lanes
from mmvitreg.ops.dropkey.splitmix import mix64, mix64_sum, signed

KEY = call_key(3, 1, seed=2**62 + 12345)


@pytest.fixture
def fresh_kernel(monkeypatch):
    """A process state where the compiled loops are not built, checked or disabled yet."""
    monkeypatch.setattr(compiled, '_STATE', {'fns': {}, 'checked': set(), 'failed': None})
    monkeypatch.delenv('MMVITREG_DROPKEY_COMPILE', raising=False)
    return compiled


def _eager(monkeypatch, fn):
    monkeypatch.setenv('MMVITREG_DROPKEY_COMPILE', '0')
    try:
        return fn()
    finally:
        monkeypatch.delenv('MMVITREG_DROPKEY_COMPILE')


def test_compiled_words_equal_python_splitmix64(fresh_kernel):
    # signed int64 terms spanning the whole range, shapes that are not multiples of anything
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(-2**63, 2**63 - 1, (301, 1), generator=g, dtype=torch.int64)
    cols = torch.randint(-2**63, 2**63 - 1, (97, ), generator=g, dtype=torch.int64)
    out = torch.empty(301, 97, dtype=torch.int64)
    got = fresh_kernel.compiled_mix_words(rows, cols, out)
    assert got is out and fresh_kernel.kernel_state() == {
        'compiled': ['mix_words'], 'checked': ['mix_words'], 'failed': None}
    for i, j in [(0, 0), (5, 96), (300, 41), (123, 7)]:
        expect = mix64((int(rows[i, 0]) + int(cols[j])) % 2**64)
        assert int(out[i, j]) == signed(expect)
    assert torch.equal(out, mix64_sum(rows, cols))


def test_large_masks_use_the_compiled_loop_with_the_eager_bits(fresh_kernel, monkeypatch):
    # 40 x 4 x 97 x 197 logits: above MIN_WORDS, rows split over several blocks
    shape = (40, 4, 97, 197)
    compiled_mask = sample_keep_mask(shape, 0.3, key=KEY)
    assert fresh_kernel.kernel_state()['checked'] == ['mix_words']
    eager_mask = _eager(monkeypatch, lambda: sample_keep_mask(shape, 0.3, key=KEY))
    assert torch.equal(compiled_mask, eager_mask)
    # arbitrary (non-contiguous) row sets too
    rows = torch.randperm(40 * 4 * 97)[:6000]
    assert torch.equal(random_lanes(KEY, rows, 197),
                       _eager(monkeypatch, lambda: random_lanes(KEY, rows, 197)))


def test_dropkey_attention_identical_with_and_without_compiled_loop(fresh_kernel, monkeypatch):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 512, 16, generator=g, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 4, 512, 16, generator=g)

    def run():
        for t in (q, k, v):
            t.grad = None
        # 2 boxes of 1M logits: the additive mask loop
        out = dropkey_attention(q, k, v, 0.2, key=KEY, memory_budget=1 << 22)
        out.backward(grad)
        return [out.detach()] + [t.grad.clone() for t in (q, k, v)]

    with_loop = run()
    assert fresh_kernel.kernel_state()['checked'] == ['additive_mask']
    without = _eager(monkeypatch, run)
    for a, b in zip(with_loop, without):
        assert torch.equal(a, b)


def test_compile_failure_falls_back_to_eager_with_one_warning(fresh_kernel, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError('no C++ compiler found\ndetails')

    monkeypatch.setattr(torch, 'compile', lambda fn, **kw: broken)
    expected = _eager(monkeypatch, lambda: sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        first = sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY)
        second = sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'no C++ compiler found' in warnings[0].getMessage()
    assert fresh_kernel.kernel_state()['failed'].startswith('RuntimeError')


def test_a_miscompiled_loop_is_detected_and_not_used(fresh_kernel, monkeypatch, caplog):
    def wrong(row_term, col_term, out):
        out.copy_(row_term + col_term)  # not hashed

    monkeypatch.setattr(torch, 'compile', lambda fn, **kw: wrong)
    expected = _eager(monkeypatch, lambda: sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        got = sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY)
    assert torch.equal(got, expected)
    assert 'differed from the eager ops' in fresh_kernel.kernel_state()['failed']


def test_small_masks_do_not_build_the_compiled_loop(fresh_kernel):
    sample_keep_mask((2, 2, 17, 17), 0.3, key=KEY)
    dropkey_attention(*(torch.randn(2, 2, 17, 8) for _ in range(3)), 0.3, key=KEY)
    assert not fresh_kernel.kernel_state()['compiled']
    assert fresh_kernel.warm_up()['checked'] == ['additive_mask', 'masked_bias', 'mix_words']



def _additive(shape, region, ratio=0.3):
    return additive_mask_region(KEY, shape, region, ratio, torch.float32)


def test_compiled_additive_mask_equals_eager_in_every_box(fresh_kernel, monkeypatch):
    # 2 x 3 x 1000 x 1001 logits: boxes of whole rows, of queries and of key ranges
    shape = (2, 3, 1000, 1001)
    boxes = [((0, 2), (0, 3), (0, 1000)), ((1, 2), (0, 2), (100, 900)),
             ((0, 2), (1, 3), (0, 1000), (0, 500)), ((0, 2), (0, 3), (0, 1000), (500, 1001))]
    for box in boxes:
        got = _additive(shape, box)
        assert fresh_kernel.kernel_state()['checked'] == ['additive_mask']
        assert torch.equal(got, _eager(monkeypatch, lambda: _additive(shape, box))), box
    assert 0.29 < float(got.isinf().float().mean()) < 0.31


def test_a_miscompiled_additive_loop_is_detected_and_not_used(fresh_kernel, monkeypatch):
    real = torch.compile

    def compile_(fn, **kw):
        if fn is not compiled.additive_mask:
            return real(fn, **kw)
        return lambda *args: args[-1].zero_()  # nothing dropped

    monkeypatch.setattr(torch, 'compile', compile_)
    shape, box = (2, 3, 1000, 1001), ((0, 2), (0, 3), (0, 1000))
    got = _additive(shape, box)
    assert torch.equal(got, _eager(monkeypatch, lambda: _additive(shape, box)))
    assert 'additive_mask differed' in fresh_kernel.kernel_state()['failed']


# ------------------------------------------------- every failure of the compile machinery (#26)
def _broken_compile(mode):
    """A ``torch.compile`` replacement failing the way ``mode`` names."""
    def compile_(fn, **kwargs):
        if mode == 'build':  # e.g. Dynamo unsupported on this Python
            raise RuntimeError('Dynamo is not supported on this Python\nmore details')

        def compiled_fn(*args, **kw):
            if mode == 'first call':  # e.g. no C++ compiler, an inductor error
                raise RuntimeError('InductorError: no working C++ compiler')
            args[-1].zero_()  # 'wrong bits': nothing dropped

        return compiled_fn

    return compile_


@pytest.mark.parametrize('mode', ['build', 'first call', 'wrong bits'])
def test_each_compile_failure_falls_back_to_the_eager_bits_with_one_warning(
        fresh_kernel, monkeypatch, caplog, mode):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 4, 512, 8, generator=g, requires_grad=True) for _ in range(3))

    def run():  # one box of 1M logits (the additive mask loop), then a large bool mask
        out = dropkey_attention(q, k, v, 0.2, key=KEY)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        return [out.detach(), *grads, sample_keep_mask((8, 4, 128, 257), 0.2, key=KEY)]

    expected = _eager(monkeypatch, run)
    monkeypatch.setattr(torch, 'compile', _broken_compile(mode))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        first, second = run(), run()
    for a, b, c in zip(first, second, expected):
        assert torch.equal(a, c) and torch.equal(b, c)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    reason = fresh_kernel.kernel_state()['failed']
    assert reason in warnings[0] and '\n' not in reason
    assert {'build': 'RuntimeError: Dynamo is not supported on this Python',
            'first call': 'RuntimeError: InductorError: no working C++ compiler',
            'wrong bits': 'the result of additive_mask differed'}[mode] in reason
    assert not fresh_kernel.compile_enabled()


def test_traced_callers_use_the_eager_ops(fresh_kernel, monkeypatch):
    monkeypatch.setattr(compiled, 'is_tracing', lambda: True)
    out = torch.empty(600, 500, dtype=torch.int64)
    assert fresh_kernel.compiled_mix_words(torch.zeros(600, 1, dtype=torch.int64),
                                           torch.arange(500), out) is None
    assert fresh_kernel.kernel_state() == {'compiled': [], 'checked': [], 'failed': None}


# ------------------------------------------------- FlexAttention (backend='auto' on CUDA)
@pytest.fixture
def fresh_flex(monkeypatch):
    """FlexAttention not built or disabled yet, and taken by ``auto`` on CPU as on CUDA."""
    from mmvitreg.ops.dropkey import flex
    if not flex.flex_available():
        pytest.skip('torch without FlexAttention')
    monkeypatch.setattr(flex, '_STATE', {'compiled': None, 'available': True, 'failed': None})
    monkeypatch.setattr(flex, 'flex_applies', lambda *a, **kw: flex.flex_failure() is None)
    return flex


@pytest.mark.parametrize('mode', ['build', 'first call'])
def test_flex_compile_failure_falls_back_to_sdpa_with_one_warning(fresh_flex, monkeypatch,
                                                                   caplog, mode):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 24, 16, generator=g) for _ in range(3))
    expected = dropkey_attention(q, k, v, 0.3, key=KEY, backend='sdpa')
    calls = []
    broken = _broken_compile(mode)
    monkeypatch.setattr(torch, 'compile', lambda fn, **kw: calls.append(fn) or broken(fn, **kw))
    with caplog.at_level(logging.WARNING, logger=fresh_flex.__name__):
        first = dropkey_attention(q, k, v, 0.3, key=KEY)
        second = dropkey_attention(q, k, v, 0.3, key=KEY)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert len(calls) == 1  # not retried
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and fresh_flex.flex_failure() in warnings[0]
    assert fresh_flex.flex_failure().startswith('RuntimeError: ')
    with pytest.raises(RuntimeError):  # an explicit backend='flex' raises instead
        dropkey_attention(q, k, v, 0.3, key=KEY, backend='flex')


def test_flex_auto_choice_stops_after_a_failure(monkeypatch):
    from mmvitreg.ops.dropkey import flex

    class CudaQ:
        shape = (1, 1, 4, 16)
        device = torch.device('cuda')

    monkeypatch.setattr(flex, '_STATE', {'compiled': None, 'available': True, 'failed': None})
    assert flex.flex_applies(CudaQ(), 'random', 0.0, None)
    flex._STATE['failed'] = 'RuntimeError: x'
    assert not flex.flex_applies(CudaQ(), 'random', 0.0, None)
