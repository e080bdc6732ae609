"""DropKey speed and memory, measured side by side in one run (CPU; CUDA too when available).

1. ViT-S/16 (224x224, batch 8) training step (forward + backward + SGD step) of an mmpretrain
   ``ImageClassifier``: plain vs DropKey (ratio 0.1, linear decrease, random) vs the paper's naive
   two-line version (explicit logits + float Bernoulli mask * -1e12) on the same model.
   Steps of the three variants are interleaved and the median is reported.
2. One global attention layer (mmpretrain ``MultiheadAttention``, N=4096 tokens, 12 heads, dim
   768, batch 1), forward + backward peak memory: plain SDPA without mask vs DropKey (chunked,
   recomputed) vs naive. On CPU each variant runs in a fresh subprocess and the peak is the
   growth of the process' peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` right before
   the step) over its RSS at that moment; on CUDA it is ``torch.cuda.max_memory_allocated`` growth.

Usage: ``python benchmarks/bench_dropkey.py [--reps 5] [--threads 2] [--device cpu|cuda]``
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _vit_s(dropkey=None):
    import mmvitreg  # noqa: F401
    from mmvitreg.registry import MODELS
    backbone = dict(type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16,
                    drop_path_rate=0.0)
    if dropkey is not None:
        backbone = dict(backbone, type='Regularized', host='VisionTransformer', dropkey=dropkey)
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                             head=dict(type='VisionTransformerClsHead', num_classes=100,
                                       in_channels=384,
                                       loss=dict(type='CrossEntropyLoss'))))


def _naivify(model):
    """Swap every DropKey core for the paper's two lines (same per-layer ratios)."""
    from mmvitreg.models.layers.dropkey import DropKey, naive_dropkey_attention

    class NaiveDropKey(DropKey):

        def forward(self, q, k, v, attn_mask=None, dropout_p=0.0, scale=None, **kwargs):
            if not self.active:
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return naive_dropkey_attention(q, k, v, self.ratio, scale)

    for m in model.modules():
        if isinstance(m, DropKey):
            m.__class__ = NaiveDropKey
    return model


def bench_train_step(device, reps, batch=8):
    torch.manual_seed(0)
    dk_cfg = dict(ratio=0.1, schedule='decrease', variant='random')
    models = {'plain': _vit_s(), 'dropkey': _vit_s(dk_cfg), 'naive (paper)': _naivify(_vit_s(dk_cfg))}
    state = models['plain'].state_dict()
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 100, (batch, ), device=device)
    opts = {}
    for name, m in models.items():
        m.load_state_dict(state)
        m.to(device).train()
        opts[name] = torch.optim.SGD(m.parameters(), lr=1e-3)

    def step(name):
        m, opt = models[name], opts[name]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(m.head(m.extract_feat(x)), y)
        loss.backward()
        opt.step()
        if device == 'cuda':
            torch.cuda.synchronize()

    times = {n: [] for n in models}
    for n in models:  # warm-up
        step(n)
    for _ in range(reps):
        for n in models:
            t0 = time.perf_counter()
            step(n)
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f'\n[1] ViT-S/16 train step, 224px, batch {batch}, {device}, median of {reps} '
          f'(interleaved)')
    print(f'{"variant":<16}{"ms/step":>10}{"ratio":>8}')
    for n in models:
        print(f'{n:<16}{med[n] * 1e3:>10.1f}{med[n] / med["plain"]:>8.3f}')
    return med


def _layer_peak(variant, device, n_tokens, chunk):
    """Peak bytes of one fwd+bwd of a global attention layer (run in a fresh process on CPU)."""
    import mmvitreg  # noqa: F401
    from mmpretrain.models.utils.attention import MultiheadAttention

    from mmvitreg.models.layers.dropkey import apply_dropkey, set_dropkey_enabled
    torch.manual_seed(0)
    layer = torch.nn.Sequential(MultiheadAttention(768, 12))
    if variant != 'plain':
        apply_dropkey(layer, dict(ratio=0.1, schedule='constant', chunk_size=chunk))
        if variant == 'naive (paper)':
            _naivify(layer)
    layer.to(device).train()
    x = torch.randn(1, n_tokens, 768, device=device, requires_grad=True)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        before = _rss_bytes()
    t0 = time.perf_counter()
    layer(x).sum().backward()
    if device == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _peak_rss_bytes() - before
    set_dropkey_enabled(layer, True)
    return peak, time.perf_counter() - t0


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def _rss_bytes():
    return _status_kb('VmRSS')


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (VmHWM) so import-time peaks do not count."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _peak_rss_bytes():
    return _status_kb('VmHWM')


def bench_layer_memory(device, n_tokens, threads):
    print(f'\n[2] one global attention layer, N={n_tokens}, 12 heads, dim 768, batch 1, '
          f'fwd+bwd, {device}')
    print(f'{"variant":<16}{"peak MB":>10}{"ratio":>8}{"s":>8}')
    res = {}
    for variant in ('plain', 'dropkey', 'naive (paper)'):
        if device == 'cuda':
            peak, sec = _layer_peak(variant, device, n_tokens, None)
        else:
            cmd = [sys.executable, __file__, '--_layer', variant, '--tokens', str(n_tokens),
                   '--threads', str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peak, sec = json.loads(out.stdout.strip().splitlines()[-1])
        res[variant] = peak
        print(f'{variant:<16}{peak / 2**20:>10.1f}{peak / res["plain"]:>8.3f}{sec:>8.2f}')
    dense = 12 * n_tokens * n_tokens * 4
    print(f'(a dense fp32 (heads, N, N) mask alone would be {dense / 2**20:.0f} MB)')
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--tokens', type=int, default=4096)
    parser.add_argument('--device', default=None, help='cpu | cuda (default: both if any)')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--_layer', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._layer:
        print(json.dumps(_layer_peak(args._layer, 'cpu', args.tokens, None)))
        return
    devices = [args.device] if args.device else ['cpu'] + (['cuda'] if torch.cuda.is_available()
                                                         else [])
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}')
    for device in devices:
        if not args.skip_train:
            bench_train_step(device, args.reps)
        bench_layer_memory(device, args.tokens, args.threads)


if __name__ == '__main__':
    main()
