"""DropKey speed and memory at the training shapes of the shipped configs (CPU; CUDA if present).

Measured side by side in one run: plain attention (``F.scaled_dot_product_attention``, no mask),
DropKey (``mmvitreg.ops.dropkey``, default memory budget) and the paper's two lines (explicit
logits + float Bernoulli mask * -1e12, ``naive_dropkey_attention``).

1. One attention layer (q/k/v projection + attention + output projection), forward + backward,
   at the per-GPU training shape of every shipped DropKey config: DeiT-S ImageNet (batch 256),
   ViT-B ImageNet (batch 128), ViT-S/4 CIFAR-100 32 px (65 tokens, batch 256), DETR-R50 encoder
   at 800x1333 (850 tokens, batch 2, width 256, 8 heads) and decoder cross-attention (100
   queries x 850 keys), PlainViT-B global attention (N = 4096, batch 1). Median of at least
   ``--reps`` interleaved repetitions (shapes whose step is short get enough for ~3 s, at most
   30); ``op`` is the same ratio for the attention op alone (no projections). The first step
   of each variant is a warm-up; it also builds DropKey's compiled CPU mask kernel (once per
   process). Peak memory: each variant runs once more in a fresh process (CPU: growth of
   the peak RSS over one step, ``VmHWM`` reset right before it, after a tiny warm-up step and
   the kernel build that only initialise the libraries; CUDA: ``max_memory_allocated``).
2. A timm ViT-S/16 training step (224 px, batch 64; forward + backward + SGD), DropKey ratio 0.1
   decreasing with depth, attached through mmvitreg's timm attention site; after 2 warm-up
   steps of each variant, median of ``--step-reps`` interleaved steps, the order alternating
   (``--step-naive``: also the paper's two lines).

Usage: ``python benchmarks/bench_dropkey.py [--reps 3] [--step-reps 4] [--threads 2]
[--device cpu|cuda] [--skip-train] [--skip-layers] [--skip-memory] [--shapes DETR,N=4096]
[--step-naive]``
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

# (name, batch, queries, keys, width, heads, host mask, attention dropout): the host's own
# settings in the shipped configs (mask: None; 'padding' = DETR's key padding, the second image
# padded on a quarter of its keys; 'bias' = PlainViT's trainable decomposed relative-position
# bias on the 64 x 64 grid, computed from q as ViTDet/SAM do)
LAYERS = [
    ('DeiT-S IN1k b256, N=197', 256, 197, 197, 384, 6, None, 0.0),
    ('ViT-B IN1k b128, N=197', 128, 197, 197, 768, 12, None, 0.0),
    ('ViT-S/4 CIFAR b256, N=65', 256, 65, 65, 384, 6, None, 0.0),
    ('DETR-R50 enc b2, N=850, pad, drop .1', 2, 850, 850, 256, 8, 'padding', 0.1),
    ('DETR-R50 dec b2, 100x850, pad, drop .1', 2, 100, 850, 256, 8, 'padding', 0.1),
    ('PlainViT-B glob b1, N=4096, rel-pos', 1, 4096, 4096, 768, 12, 'bias', 0.0),
]
VARIANTS = ('plain', 'dropkey', 'naive (paper)')
RATIO = 0.1
MIN_SECONDS, MAX_REPS = 3.0, 30
WARMUP_STEPS = 2
MMAP_THRESHOLD = 128 << 10


class AttentionLayer(nn.Module):
    """q/k/v projections + attention core + output projection (queries may differ from keys),
    with the host's mask and attention dropout."""

    def __init__(self, dim: int, heads: int, variant: str, mask_kind=None, dropout=0.0,
                 grid: int = 64):
        super().__init__()
        self.heads, self.variant = heads, variant
        self.mask_kind, self.dropout = mask_kind, dropout
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if mask_kind == 'bias':  # decomposed relative-position tables (ViTDet), trainable
            self.rel_h = nn.Parameter(0.02 * torch.randn(2 * grid - 1, dim // heads))
            self.rel_w = nn.Parameter(0.02 * torch.randn(2 * grid - 1, dim // heads))
        from mmvitreg.ops.dropkey import DropKey
        self.dropkey = DropKey(RATIO)

    def host_mask(self, q, nk):
        if self.mask_kind == 'padding':
            mask = torch.ones(q.shape[0], 1, 1, nk, dtype=torch.bool, device=q.device)
            mask[-1, ..., -(nk // 4):] = False
            return mask
        if self.mask_kind == 'bias':
            return rel_pos_bias(q, self.rel_h, self.rel_w)
        return None

    def forward(self, xq, xkv):
        b, nq, c = xq.shape
        nk, h = xkv.shape[1], self.heads
        q = self.q(xq).view(b, nq, h, c // h).transpose(1, 2)
        k, v = self.kv(xkv).view(b, nk, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, self.variant, self.dropkey, self.host_mask(q, nk), self.dropout)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


def rel_pos_bias(q, rel_h, rel_w):
    """ViTDet's decomposed relative-position bias ``(B, heads, N, N)`` of a square grid."""
    b, h, n, d = q.shape
    g = int(round(n ** 0.5))
    idx = torch.arange(g, device=q.device)
    offsets = idx[:, None] - idx[None, :] + g - 1
    qg = q.reshape(b, h, g, g, d)
    bias_h = torch.einsum('bhyxd,ykd->bhyxk', qg, rel_h[offsets])
    bias_w = torch.einsum('bhyxd,xkd->bhyxk', qg, rel_w[offsets])
    return (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, h, n, n)


def attention(q, k, v, variant, dropkey, mask=None, dropout=0.0):
    if variant == 'plain':  # the host's own attention, same mask and dropout
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    if variant == 'dropkey':
        return dropkey(q, k, v, attn_mask=mask, dropout_p=dropout)
    if mask is None and dropout == 0:
        from mmvitreg.ops.dropkey import naive_dropkey_attention
        return naive_dropkey_attention(q, k, v, RATIO)
    # the paper's two lines with the host's mask and dropout
    attn = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if mask is not None:
        attn = attn.masked_fill(~mask, float('-inf')) if mask.dtype == torch.bool else attn + mask
    attn = attn + torch.bernoulli(torch.full_like(attn, RATIO)) * -1e12
    return F.dropout(attn.softmax(-1), dropout) @ v


def _inputs(shape, device, seed=0):
    _, b, nq, nk, c = shape[:5]
    g = torch.Generator().manual_seed(seed)
    xq = torch.randn(b, nq, c, generator=g).to(device).requires_grad_()
    xkv = xq if nq == nk else torch.randn(b, nk, c, generator=g).to(device).requires_grad_()
    return xq, xkv


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def bench_layers(device, reps, threads, memory, shapes=LAYERS):
    print(f'\n[1] one attention layer (projections + attention), forward + backward, {device}; '
          f'DropKey ratio {RATIO}; median of >= {reps} interleaved repetitions (short shapes: '
          f'enough for {MIN_SECONDS:.0f} s, at most {MAX_REPS})')
    head = (f'{"shape":<40}{"plain ms":>10}{"DropKey":>9}{"naive":>8}{"op: DK":>8}'
            + (f'{"plain MB":>10}{"DK mem":>8}{"naive mem":>10}' if memory else ''))
    print(head)
    results = []
    for shape in shapes:
        name, _, _, _, c, h, mask_kind, dropout = shape
        torch.manual_seed(0)
        layers = {v: AttentionLayer(c, h, v, mask_kind, dropout).to(device).train()
                  for v in VARIANTS}
        for v in VARIANTS[1:]:
            layers[v].load_state_dict(layers['plain'].state_dict())
        xq, xkv = _inputs(shape, device)
        b, nq, nk, d = shape[1], shape[2], shape[3], c // h
        qkv = [torch.randn(b, h, n, d, device=device, requires_grad=True) for n in (nq, nk, nk)]
        op_layer = layers['plain']

        def layer_step(v):
            _sync(device)
            t0 = time.perf_counter()
            layers[v](xq, xkv).sum().backward()
            _sync(device)
            return time.perf_counter() - t0

        def op_step(v):
            _sync(device)
            t0 = time.perf_counter()
            attention(*qkv, v, layers[v].dropkey, op_layer.host_mask(qkv[0], nk),
                      dropout).sum().backward()
            _sync(device)
            return time.perf_counter() - t0

        times = {v: [] for v in VARIANTS}
        op_times = {v: [] for v in VARIANTS[:2]}
        warm = {v: layer_step(v) for v in VARIANTS}
        # short shapes get more repetitions (>= ~3 s of plain steps, at most 30): their ratios
        # are otherwise dominated by scheduling noise
        n = max(reps, min(MAX_REPS, int(MIN_SECONDS / warm['plain'])))
        for _ in range(n):
            for v in VARIANTS:
                times[v].append(layer_step(v))
            for v in op_times:
                op_times[v].append(op_step(v))
        med = {v: statistics.median(t) for v, t in times.items()}
        op_ratio = statistics.median(op_times['dropkey']) / statistics.median(op_times['plain'])
        row = dict(name=name, reps=n, ms={v: med[v] * 1e3 for v in VARIANTS}, op_ratio=op_ratio)
        line = (f'{name:<40}{med["plain"] * 1e3:>10.1f}{med["dropkey"] / med["plain"]:>8.3f}x'
                f'{med["naive (paper)"] / med["plain"]:>7.2f}x{op_ratio:>7.3f}x')
        if memory:
            peaks = {v: _peak_subprocess(shape, v, device, threads) for v in VARIANTS}
            row['peak_mb'] = {v: p / 2**20 for v, p in peaks.items()}
            line += (f'{peaks["plain"] / 2**20:>10.1f}{peaks["dropkey"] / peaks["plain"]:>7.3f}x'
                     f'{peaks["naive (paper)"] / peaks["plain"]:>9.2f}x')
        print(line, flush=True)
        results.append(row)
        del layers, xq, xkv, qkv
    return results


def _peak_subprocess(shape, variant, device, threads):
    if device == 'cuda':
        return _layer_peak(LAYERS.index(shape), variant, device)
    code = ('import sys\n'
            "for m in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):\n"
            '    sys.modules[m] = None  # the op needs torch only; keeps the process small\n'
            f'sys.argv = [{__file__!r}, "--_peak", "{LAYERS.index(shape)}", "--_variant", '
            f'{variant!r}, "--threads", "{threads}"]\n'
            f'import runpy; runpy.run_path({__file__!r}, run_name="__main__")\n')
    # glibc with a fixed mmap threshold (no dynamic raise): every large tensor is its own
    # mapping, returned to the system when freed, so the peak RSS is the peak of live memory
    # rather than of what the allocator happened to keep
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _layer_peak(index, variant, device):
    """Peak bytes of one forward + backward of the layer (fresh process on CPU)."""
    shape = LAYERS[index]
    torch.manual_seed(0)
    layer = AttentionLayer(*shape[4:6], variant, *shape[6:8]).to(device).train()
    xq, xkv = _inputs(shape, device)
    if device == 'cuda':  # warm-up (kernel selection); on CPU the process is fresh and the
        layer(xq, xkv).sum().backward()  # growth includes everything DropKey allocates
        for p in list(layer.parameters()) + [xq, xkv]:
            p.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:  # one-time library initialisation (not the layer's memory) on a tiny input first;
        # DropKey's mask workspace grows to its real size inside the measured step
        tiny = torch.randn(1, 16, shape[4], requires_grad=True)  # a 4 x 4 grid
        layer(tiny, tiny).sum().backward()
        if variant == 'dropkey':  # builds the compiled CPU mask kernel (once per process)
            from mmvitreg.ops.dropkey.compiled import warm_up
            warm_up()
        for p in layer.parameters():
            p.grad = None
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM
        before = _status_bytes('VmRSS')
    layer(xq, xkv).sum().backward()
    if device == 'cuda':
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return _status_bytes('VmHWM') - before


def _status_bytes(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def bench_train_step(device, reps, batch=64, naive=False):
    from gpu_acceptance import attach_dropkey_timm, build_vit, naivify
    torch.manual_seed(0)
    variants = VARIANTS if naive else VARIANTS[:2]
    models = {'plain': build_vit('vit_small_patch16_224', False)}
    state = models['plain'].state_dict()
    for v in variants[1:]:
        m = build_vit('vit_small_patch16_224', False)
        m.load_state_dict(state)
        how = attach_dropkey_timm(m, RATIO)
        models[v] = naivify(m) if v.startswith('naive') else m
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch, ), device=device)
    opts = {}
    for v, m in models.items():
        m.to(device).train()
        opts[v] = torch.optim.SGD(m.parameters(), lr=1e-3)

    def step(v):
        _sync(device)
        t0 = time.perf_counter()
        opts[v].zero_grad(set_to_none=True)
        F.cross_entropy(models[v](x), y).backward()
        opts[v].step()
        _sync(device)
        return time.perf_counter() - t0

    times = {v: [] for v in variants}
    for _ in range(WARMUP_STEPS):  # step times settle after a few steps (allocator growth)
        for v in variants:
            step(v)
    for rep in range(reps):
        # the order alternates between repetitions, so neither variant always runs first
        for v in (variants if rep % 2 == 0 else variants[::-1]):
            times[v].append(step(v))
    med = {v: statistics.median(t) for v, t in times.items()}
    print(f'\n[2] timm ViT-S/16 train step, 224 px, batch {batch}, {device}, DropKey ratio {RATIO} '
          f'decreasing with depth (attached via {how}), median of {reps} interleaved (order '
          f'alternating)')
    print(f'{"variant":<16}{"ms/step":>10}{"ratio":>8}')
    for v in variants:
        print(f'{v:<16}{med[v] * 1e3:>10.1f}{med[v] / med["plain"]:>8.3f}')
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=3, help='layer repetitions')
    parser.add_argument('--step-reps', type=int, default=4, help='train-step repetitions')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default=None, help='cpu | cuda (default: both if any)')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-layers', action='store_true', help='only the train step')
    parser.add_argument('--step-naive', action='store_true',
                        help="also time the paper's two lines in the train step (~1 min more)")
    parser.add_argument('--skip-memory', action='store_true')
    parser.add_argument('--shapes', default=None,
                        help='comma-separated parts of layer names to run (default: all)')
    parser.add_argument('--_peak', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--_variant', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._peak is not None:
        print(json.dumps(_layer_peak(args._peak, args._variant, 'cpu')))
        return
    devices = [args.device] if args.device else ['cpu'] + (['cuda'] if torch.cuda.is_available()
                                                         else [])
    from mmvitreg.ops.dropkey import default_memory_budget
    t0 = time.time()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, DropKey memory budget '
          f'{default_memory_budget("cpu") / 2**20:.0f} MiB (CPU)')
    for device in devices:
        shapes = LAYERS if args.shapes is None else [
            s for s in LAYERS if any(part in s[0] for part in args.shapes.split(','))]
        if not shapes:
            parser.error(f'--shapes {args.shapes!r} matches none of: '
                         + '; '.join(s[0] for s in LAYERS))
        if not args.skip_layers:
            bench_layers(device, args.reps, args.threads, not args.skip_memory, shapes)
        if not args.skip_train:
            bench_train_step(device, args.step_reps, naive=args.step_naive)
    print(f'\ntotal {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
