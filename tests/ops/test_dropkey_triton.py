"""The Triton DropKey kernels (attention dropout, padding, trainable bias) against their
reference, run in Triton's interpreter on CPU tensors.

Triton turns its interpreter on only when ``TRITON_INTERPRET=1`` is set before it is imported,
so one child process runs ``triton_interpreter_checks.py`` (~40 s) and writes its measurements;
each test here asserts one behaviour from them. The path choice and the fallback after a launch
failure are tested in this process (no interpreter: a JIT launch on CPU tensors fails).
"""
import json
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmvitreg.ops.dropkey import triton_flash
from mmvitreg.ops.dropkey.attention import dropkey_path
from mmvitreg.ops.dropkey.random import call_key

pytestmark = pytest.mark.skipif(not triton_flash.triton_available(), reason='no Triton')
HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))


@pytest.fixture(scope='module')
def interpreted(tmp_path_factory):
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    out = tmp_path_factory.mktemp('triton') / 'results.json'
    proc = subprocess.run(
        [sys.executable, osp.join(HERE, 'triton_interpreter_checks.py'), str(out)], env=env,
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize('case', ['plain', 'detr_encoder_padding_dropout_dv32',
                                  'detr_decoder_cross_padding_dropout',
                                  'plainvit_trainable_bias_d24', 'bias_per_image_and_dropout',
                                  'bias_shared_over_batch_and_dropout',
                                  'kv_broadcast_over_heads', 'all_dropped_rows'])
def test_output_and_every_gradient_match_the_reference_fp32(interpreted, case):
    """Output, dq, dk, dv (and the bias's gradient where it is trainable) equal the written-out
    reference to float precision, at several tiles, padded head dims and v's own head dim."""
    result = interpreted['cases'][case]
    assert result['shapes_equal']
    assert len(result['errors']) in (4, 5)
    assert max(result['errors']) <= 1e-5 * max(1.0, result['scale']), result


def test_fp16_matches_the_fp32_reference(interpreted):
    result = interpreted['fp16']
    assert result['dtype'] == 'torch.float16'
    assert max(result['errors']) <= 5e-3 * result['scale'], result


def test_dropkey_bits_are_those_of_the_other_paths(interpreted):
    """Without dropout the kernel and the SDPA path (the masks of ``masks.py``) agree for one
    call key; another key gives another output."""
    assert interpreted['same_mask']['vs_sdpa'] <= 1e-5
    assert interpreted['same_mask']['vs_other_key'] > 0.1


def test_hashing_per_word_and_per_logit_agree_bit_for_bit(interpreted):
    assert interpreted['lanes']['bitwise_equal']


def test_other_configs_give_the_same_result(interpreted):
    """The configuration is a tuning knob only: tiles 16x16 .. 64x64 (key blocks that split the
    4-key hash words' columns differently) and CUDA-core fp32 products all match the reference
    to float precision."""
    result = interpreted['configs']
    assert sorted(result['errors']) == sorted(['16x16', '32x16', '16x32', '64x64',
                                               '16x16x4x2xieee'])
    assert max(result['errors'].values()) <= 1e-5 * max(1.0, result['scale']), result


def test_attention_dropout_rate_scale_and_counter_based_bits(interpreted):
    result = interpreted['dropout']
    # 16,384 Bernoulli(0.1) draws: 5 standard deviations = 0.0117
    assert result['samples'] == 16384
    assert abs(result['dropped_fraction'] - 0.1) < 0.0117
    assert result['kept_value'] == pytest.approx(result['expected_kept_value'], rel=1e-5)
    assert result['kept_spread'] < 1e-6
    assert result['same_key_equal']  # a recomputed forward or a resumed run drops the same
    # another key: two independent 10 % masks disagree on ~18 % of the probabilities
    assert 0.12 < result['other_key_differs'] < 0.24


def test_whole_model_torch_compile_trains_as_eager(interpreted):
    result = interpreted['compile']
    assert result['backends'] == ['triton', 'triton']
    assert result['compiled_losses'] == pytest.approx(result['eager_losses'], abs=1e-6)
    assert result['weights_diff'] <= 1e-6


def test_first_use_check_passes_on_a_correct_kernel(interpreted):
    """(called under ``no_grad``, as in validation, where the check must still run)"""
    result = interpreted['first_use']
    assert result['returned_tensor'] and result['failure'] is None
    assert result['verified'] == ["('cpu', torch.float32)"]


def test_wrong_results_turn_the_path_off_with_one_warning(interpreted):
    result = interpreted['wrong_results']
    assert result['returned_none'] and result['second_call_none']
    assert result['warnings'] == 1
    assert result['reason'].startswith('RuntimeError: first-use check failed')
    assert result['auto_path_after'] == 'sdpa'


def _detr_call(dropout_p=0.1, bias=False):
    q, k, v = (torch.randn(2, 8, 50, 32) for _ in range(3))
    if bias:
        mask = torch.zeros(1, 8, 50, 50, requires_grad=True)
    else:
        mask = torch.ones(2, 1, 1, 50, dtype=torch.bool)
        mask[1, ..., -9:] = False
    return q, k, v, mask, dropout_p


@pytest.mark.parametrize('dropout_p, bias, path', [(0.1, False, 'triton'), (0.0, True, 'triton'),
                                                   (0.0, False, 'flex')])
def test_auto_path_on_cuda(dropout_p, bias, path, monkeypatch):
    """backend='auto' on CUDA: the Triton kernel with attention dropout or a trainable bias
    (DETR, QPIC, PlainViT), FlexAttention for the others; never on CPU."""
    monkeypatch.setitem(triton_flash._STATE, 'failed', None)
    q, k, v, mask, dropout_p = _detr_call(dropout_p, bias)
    kwargs = dict(attn_mask=mask, dropout_p=dropout_p)
    assert dropkey_path(q, k, v, 0.1, device_type='cuda', memory_budget=1 << 30,
                        **kwargs) == path
    assert dropkey_path(q, k, v, 0.1, **kwargs) != 'triton'
    assert dropkey_path(q, k, v, 0.1, variant='block', device_type='cuda',
                        memory_budget=1 << 30, **kwargs) != 'triton'


def test_launch_failure_falls_back_with_one_warning(monkeypatch, caplog):
    """A JIT launch on CPU tensors fails (no GPU driver): ``strict=False`` returns None after one
    warning, the path stays off for the process, and ``dropkey_attention`` gives the SDPA result;
    ``backend='triton'`` raises instead."""
    monkeypatch.setitem(triton_flash._STATE, 'failed', None)
    monkeypatch.setitem(triton_flash._STATE, 'verified', set())
    q, k, v, mask, dropout_p = _detr_call()
    key = call_key(0, 0, seed=5)
    with pytest.raises(Exception):
        triton_flash.triton_dropkey_attention(q, k, v, 0.2, key, attn_mask=mask, strict=True)
    assert triton_flash.triton_failure() is None
    with caplog.at_level(logging.WARNING, logger=triton_flash.__name__):
        first = triton_flash.triton_dropkey_attention(q, k, v, 0.2, key, attn_mask=mask,
                                                      strict=False)
        second = triton_flash.triton_dropkey_attention(q, k, v, 0.2, key, attn_mask=mask,
                                                       strict=False)
    assert first is None and second is None
    assert len([r for r in caplog.records if 'Triton kernel is off' in r.message]) == 1
    assert triton_flash.triton_failure()
    assert dropkey_path(q, k, v, 0.2, attn_mask=mask, dropout_p=0.1, device_type='cuda',
                        memory_budget=1 << 30) == 'sdpa'


def test_auto_leaves_fp32_head_dims_over_128_to_sdpa(monkeypatch):
    """(every tile spills kilobytes of registers there); fp16 and autocast calls keep the kernel,
    and an explicit ``backend='triton'`` still takes it."""
    monkeypatch.setitem(triton_flash._STATE, 'failed', None)
    q = torch.randn(1, 2, 8, 192)
    kwargs = dict(dropout_p=0.1, device_type='cuda', memory_budget=1 << 30)
    assert dropkey_path(q, q, q, 0.1, **kwargs) == 'sdpa'
    assert dropkey_path(q[..., :128], q[..., :128], q[..., :128], 0.1, **kwargs) == 'triton'
    assert dropkey_path(q.half(), q.half(), q.half(), 0.1, **kwargs) == 'triton'
    assert dropkey_path(q, q, q, 0.1, backend='triton', **kwargs) == 'triton'
    with torch.autocast('cpu', dtype=torch.bfloat16):  # CUDA's autocast state is its own
        assert dropkey_path(q, q, q, 0.1, **kwargs) == 'sdpa'


def test_head_dims_beyond_the_kernel_are_refused_in_one_line():
    q = torch.randn(1, 1, 8, 512)
    with pytest.raises(ValueError, match='head dims up to 256'):
        triton_flash.triton_dropkey_attention(q, q, q, 0.1, 1)
    assert not triton_flash.triton_applies(q, 'random', None, q, device_type='cuda')


@pytest.mark.parametrize('config', [(48, 64), (64, 8), (64, 512), (64, 64, 3), (64, 64, 4, 0),
                                    (64, 64, 4, 2, 'tf32'), (64, ), 'big'])
def test_bad_configs_are_refused_in_one_line(config):
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match='config must be'):
        triton_flash.triton_dropkey_attention(q, q, q, 0.1, 1, config=config)


def test_default_config():
    """Tiles per GPU generation, dtype and dropout (``test_dropkey_triton_aot.py`` asserts why:
    no kernel of a shipped call spills on sm_90, sm_100 or sm_80); fp32 as 3xTF32 tensor-core
    products, as the host's fp32 SDPA kernel does."""
    half, fp32 = torch.float16, torch.float32
    assert triton_flash.default_config(90, half, 64, 64, False) == (64, 64, 4, 2, 'tf32x3')
    assert triton_flash.default_config(90, half, 32, 32, True)[:2] == (64, 32)
    assert triton_flash.default_config(90, fp32, 32, 32, True)[:2] == (64, 16)
    assert triton_flash.default_config(80, half, 64, 64, False)[:2] == (32, 32)
    assert triton_flash.default_config(86, fp32, 64, 64, False)[:2] == (32, 16)
    assert triton_flash.default_config(100, fp32, 64, 64, False)[:2] == (32, 16)
    assert triton_flash.default_config(100, half, 64, 64, False)[:2] == (64, 64)
    assert triton_flash.default_config(90, half, 256, 64, False)[:2] == (32, 16)
    assert triton_flash.default_config(90, fp32, 64, 256, False)[:2] == (16, 16)
    assert triton_flash.default_config(None, fp32, 64, 64, True)[:2] == (16, 16)
