"""Runs the Triton DropKey kernels in Triton's interpreter (CPU tensors); writes JSON results to
the file named by its argument.

Started by ``test_dropkey_triton.py`` in a child process with ``TRITON_INTERPRET=1``: Triton
reads that variable when it is imported, so the interpreter cannot be switched on inside the test
process. Every number written is checked by an assertion there.
"""
import json
import logging
import os
import sys

import torch

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

from mmvitreg.ops.dropkey import dropkey_attention  # noqa: E402
from mmvitreg.ops.dropkey import triton_flash  # noqa: E402
from mmvitreg.ops.dropkey.attention import dropkey_path  # noqa: E402
from mmvitreg.ops.dropkey.random import call_key  # noqa: E402

KEY = call_key(3, 0, seed=2024)


def _inputs(b, h, nq, nk, d, dv, mask, dtype=torch.float32, kv_heads=None, bias_batch=1):
    gen = torch.Generator().manual_seed(nq * 131 + nk)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).requires_grad_()

    kh = h if kv_heads is None else kv_heads
    q, k, v = rand(b, h, nq, d), rand(b, kh, nk, d), rand(b, kh, nk, dv)
    attn_mask = None
    if mask == 'padding':  # DETR: the second image has 9 padded keys
        attn_mask = torch.ones(b, 1, 1, nk, dtype=torch.bool)
        attn_mask[-1, ..., nk - 9:] = False
    elif mask == 'bias':  # PlainViT: a trainable relative-position bias
        attn_mask = rand(bias_batch, h, nq, nk)
    return q, k, v, attn_mask


def _errors(first, second):
    return [float((a.float() - b.float()).abs().max()) for a, b in zip(first, second)]


def _out_and_grads(fn, q, k, v, attn_mask, ratio, dropout_p, key=KEY):
    out = fn(q, k, v, ratio, key, attn_mask=attn_mask, dropout_p=dropout_p)
    inputs = [q, k, v] + ([attn_mask] if attn_mask is not None and attn_mask.requires_grad
                          else [])
    weight = torch.linspace(-1, 1, out.numel()).view(out.shape)
    return [out] + list(torch.autograd.grad((out.float() * weight).sum(), inputs))


def kernel(q, k, v, ratio, key, **kwargs):
    return triton_flash.triton_dropkey_attention(q, k, v, ratio, key, **kwargs)


def reference(q, k, v, ratio, key, **kwargs):
    return triton_flash.reference_attention(q, k, v, ratio, key, **kwargs)


CASES = {
    # name: (b, h, nq, nk, d, dv, mask, ratio, dropout, extra)
    'plain': ((1, 2, 20, 33, 16, 16, None, 0.3, 0.0), {}),
    'detr_encoder_padding_dropout_dv32': ((2, 2, 40, 50, 16, 32, 'padding', 0.3, 0.1), {}),
    'detr_decoder_cross_padding_dropout': ((2, 2, 10, 45, 32, 32, 'padding', 0.2, 0.1), {}),
    'plainvit_trainable_bias_d24': ((1, 2, 37, 45, 24, 16, 'bias', 0.5, 0.0), {}),
    'bias_per_image_and_dropout': ((2, 2, 18, 30, 16, 16, 'bias', 0.3, 0.2),
                                   {'bias_batch': 2}),
    'bias_shared_over_batch_and_dropout': ((2, 2, 18, 30, 16, 16, 'bias', 0.3, 0.1), {}),
    'kv_broadcast_over_heads': ((2, 3, 20, 24, 16, 16, None, 0.3, 0.1), {'kv_heads': 1}),
    'all_dropped_rows': ((1, 2, 30, 3, 16, 16, None, 0.9, 0.0), {}),
}


def check_cases():
    results = {}
    for name, ((b, h, nq, nk, d, dv, mask, ratio, dropout), extra) in CASES.items():
        q, k, v, attn_mask = _inputs(b, h, nq, nk, d, dv, mask, **extra)
        got = _out_and_grads(kernel, q, k, v, attn_mask, ratio, dropout)
        want = _out_and_grads(reference, q, k, v, attn_mask, ratio, dropout)
        results[name] = {'errors': _errors(got, want),
                         'scale': max(float(w.abs().max()) for w in want),
                         'shapes_equal': all(g.shape == w.shape for g, w in zip(got, want))}
    return results


def check_fp16():
    q, k, v, attn_mask = _inputs(2, 2, 40, 50, 16, 32, 'padding', dtype=torch.float16)
    got = _out_and_grads(kernel, q, k, v, attn_mask, 0.3, 0.1)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    want = _out_and_grads(reference, q32, k32, v32, attn_mask, 0.3, 0.1)
    return {'dtype': str(got[0].dtype), 'errors': _errors(got, want),
            'scale': max(float(w.abs().max()) for w in want)}


@torch.no_grad()
def check_same_mask_as_sdpa_path():
    """No dropout: the kernel and the SDPA path (the masks of :mod:`.masks`) give one output."""
    q, k, v, attn_mask = _inputs(2, 2, 40, 50, 16, 16, 'padding')
    fused = dropkey_attention(q, k, v, 0.4, key=KEY, attn_mask=attn_mask, backend='triton')
    sdpa = dropkey_attention(q, k, v, 0.4, key=KEY, attn_mask=attn_mask, backend='sdpa')
    without = dropkey_attention(q, k, v, 0.4, key=KEY + 1, attn_mask=attn_mask, backend='sdpa')
    return {'vs_sdpa': float((fused - sdpa).abs().max()),
            'vs_other_key': float((fused - without).abs().max())}


@torch.no_grad()
def check_dropout_bits():
    """Uniform attention over 64 keys with v = identity: the output is each kept probability
    (1 / 64 / (1 - p)) or exactly 0 where dropout dropped it."""
    b, h, n, p = 2, 2, 64, 0.1
    q = torch.zeros(b, h, n, 16)
    v = torch.eye(n).expand(b, h, n, n).contiguous()
    tiny = 1e-6  # DropKey itself (almost) off: only attention dropout zeroes probabilities
    out = triton_flash.triton_dropkey_attention(q, q, v, tiny, KEY, dropout_p=p)
    again = triton_flash.triton_dropkey_attention(q, q, v, tiny, KEY, dropout_p=p)
    other = triton_flash.triton_dropkey_attention(q, q, v, tiny, KEY ^ 1, dropout_p=p)
    kept = out[out != 0]
    return {'dropped_fraction': float((out == 0).float().mean()), 'samples': out.numel(),
            'kept_value': float(kept.mean()), 'kept_spread': float(kept.max() - kept.min()),
            'expected_kept_value': 1 / n / (1 - p),
            'same_key_equal': bool(torch.equal(out, again)),
            'other_key_differs': float(((out == 0) != (other == 0)).float().mean())}


def check_lanes_per_word_equal_per_logit():
    """The two ways of hashing (one word per 4 keys, one per logit) give the same bits: the
    same output and gradients, bit for bit, with DropKey and dropout, at a key count that is no
    multiple of 4 or of the tile."""
    q, k, v, attn_mask = _inputs(2, 2, 40, 51, 16, 16, 'padding')
    results = []
    for lanes in ('word', 'logit'):
        def fn(*args, **kwargs):
            return triton_flash.triton_dropkey_attention(*args, lanes=lanes, **kwargs)
        results.append(_out_and_grads(fn, q, k, v, attn_mask, 0.3, 0.1))
    return {'bitwise_equal': all(torch.equal(a, b) for a, b in zip(*results))}


def check_configs_do_not_change_bits():
    """Other tile shapes and fp32 products (the tuning knob): the same drop decisions, so the
    same output and gradients up to the order of the float sums; each against the reference."""
    q, k, v, attn_mask = _inputs(2, 2, 40, 51, 16, 32, 'padding')
    want = _out_and_grads(reference, q, k, v, attn_mask, 0.3, 0.1)
    results = {}
    for config in ((16, 16), (32, 16), (16, 32), (64, 64), (16, 16, 4, 2, 'ieee')):
        def fn(*args, **kwargs):
            return triton_flash.triton_dropkey_attention(*args, config=config, **kwargs)
        got = _out_and_grads(fn, q, k, v, attn_mask, 0.3, 0.1)
        results['x'.join(map(str, config))] = max(_errors(got, want))
    return {'errors': results, 'scale': max(float(w.abs().max()) for w in want)}


def check_whole_model_torch_compile():
    """A timm ViT (attention dropout 0.1) with DropKey on the Triton path: two SGD steps of
    ``torch.compile(model, backend='eager')`` give the eager model's losses and weights (the
    sampling call runs eagerly between the graphs; the bits are a function of the step)."""
    import timm
    import torch.nn.functional as F

    from mmvitreg.ops.dropkey import dropkey_modules, set_seed, set_step
    from mmvitreg.regularizers.registry import apply_regularizers
    set_seed(7)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3])
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=16,
                                patch_size=4, depth=2, embed_dim=32, num_heads=2, num_classes=5,
                                attn_drop_rate=0.1)
        apply_regularizers(net, dropkey=dict(ratio=0.3, schedule='constant', backend='triton'))
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        run = torch.compile(net, backend='eager') if compiled else net
        losses = []
        for i in range(2):
            set_step(i)
            opt.zero_grad()
            loss = F.cross_entropy(run(x), labels)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        runs.append((losses, [p.detach().clone() for p in net.parameters()],
                     [m.backend for m in dropkey_modules(net)]))
    (eager_losses, eager_params, backends), (comp_losses, comp_params, _) = runs
    return {'backends': backends, 'eager_losses': eager_losses, 'compiled_losses': comp_losses,
            'weights_diff': max(float((a - b).abs().max())
                                for a, b in zip(eager_params, comp_params))}


def check_wrong_results_fall_back():
    """``strict=False``: a first-use check that disagrees turns the path off with one warning."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(triton_flash.__name__).addHandler(handler)
    original = triton_flash.reference_attention
    triton_flash._STATE['verified'].clear()
    triton_flash.reference_attention = lambda *a, **k: original(*a, **k) * 2
    try:
        q, k, v, attn_mask = _inputs(1, 2, 20, 33, 16, 16, 'padding')
        out = triton_flash.triton_dropkey_attention(q, k, v, 0.3, KEY, attn_mask=attn_mask,
                                                    dropout_p=0.1, strict=False)
        second = triton_flash.triton_dropkey_attention(q, k, v, 0.3, KEY, attn_mask=attn_mask,
                                                       dropout_p=0.1, strict=False)
        path = dropkey_path(q, k, v, 0.3, attn_mask=attn_mask, dropout_p=0.1,
                            device_type='cuda', memory_budget=1 << 30)
    finally:
        triton_flash.reference_attention = original
    return {'returned_none': out is None, 'warnings': len(records),
            'reason': triton_flash.triton_failure(), 'second_call_none': second is None,
            'auto_path_after': path}


def check_first_use_check_passes():
    triton_flash._STATE['verified'].clear()
    triton_flash._STATE['failed'] = None
    q, k, v, attn_mask = _inputs(1, 2, 20, 33, 16, 16, 'padding')
    with torch.no_grad():  # as in validation: the check itself needs autograd
        out = triton_flash.triton_dropkey_attention(q, k, v, 0.3, KEY, attn_mask=attn_mask,
                                                    dropout_p=0.1, strict=False)
    return {'returned_tensor': out is not None, 'failure': triton_flash.triton_failure(),
            'verified': sorted(str(t) for t in triton_flash._STATE['verified'])}


def main():
    torch.set_num_threads(1)
    results = {'cases': check_cases(), 'fp16': check_fp16(),
               'same_mask': check_same_mask_as_sdpa_path(), 'dropout': check_dropout_bits(),
               'lanes': check_lanes_per_word_equal_per_logit(),
               'configs': check_configs_do_not_change_bits(),
               'compile': check_whole_model_torch_compile(),
               'first_use': check_first_use_check_passes(),
               'wrong_results': check_wrong_results_fall_back()}
    with open(sys.argv[1], 'w') as f:
        json.dump(results, f)


if __name__ == '__main__':
    main()
