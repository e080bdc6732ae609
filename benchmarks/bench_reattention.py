#!/usr/bin/env python
"""Re-attention throughput: a ViT with Re-attention in every block vs the same ViT with plain
self-attention (same depth, width, weights of qkv/proj/MLP), side by side.

Default: 16 blocks, 12 heads, MLP ratio 3 at width 192 (DeepViT-16 has 384: ``--dim 384``),
32x32 px with patch 4 (65 tokens), batch 8, so it finishes in a minute or two on a 2-core CPU;
``--img 224 --patch 16`` gives the paper's 197 tokens. Training steps (forward + backward +
AdamW) and inference passes of the models are interleaved so machine load affects all alike; the
script prints the median times and the Re-attention / plain ratios. Also reports DropKey +
Re-attention when ``--dropkey`` is given.

    OMP_NUM_THREADS=2 python benchmarks/bench_reattention.py [--depth 16] [--steps 5]
    python benchmarks/bench_reattention.py --device cuda --img 224 --patch 16 --batch 64
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS


def build(depth: int, dim: int, heads: int, img: int, patch: int, reattention: bool,
          dropkey: bool) -> nn.Module:
    arch = dict(embed_dims=dim, num_layers=depth, num_heads=heads, feedforward_channels=3 * dim)
    backbone = dict(type='DeepViT', arch=arch, img_size=img, patch_size=patch,
                    reattention=None if reattention else False)
    if dropkey:
        backbone = dict(backbone, type='Regularized', host='DeepViT',
                        dropkey=dict(ratio=0.1, schedule='constant'))
    return MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        head=dict(type='VisionTransformerClsHead', num_classes=100, in_channels=dim)))


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def train_step(model, opt, x, y, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x, mode='tensor'), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, x, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    model(x, mode='tensor')
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depth', type=int, default=16)
    parser.add_argument('--dim', type=int, default=192, help='384 for the DeepViT-16 width')
    parser.add_argument('--heads', type=int, default=12)
    parser.add_argument('--img', type=int, default=32)
    parser.add_argument('--patch', type=int, default=4)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--steps', type=int, default=3, help='timed rounds (after 1 warm-up)')
    parser.add_argument('--dropkey', action='store_true', help='also time Re-attention+DropKey')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    names = ['plain', 'reattention'] + (['reattention+dropkey'] if args.dropkey else [])
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = build(args.depth, args.dim, args.heads, args.img, args.patch,
                             name != 'plain', 'dropkey' in name).to(args.device)
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    x = torch.randn(args.batch, 3, args.img, args.img, device=args.device)
    y = torch.randint(0, 100, (args.batch, ), device=args.device)
    train_t = {n: [] for n in names}
    infer_t = {n: [] for n in names}
    for r in range(args.steps + 1):
        for n in names:
            models[n].train()
            t = train_step(models[n], opts[n], x, y, args.device)
            models[n].eval()
            i = infer(models[n], x, args.device)
            if r:  # round 0 is warm-up
                train_t[n].append(t)
                infer_t[n].append(i)
    tokens = (args.img // args.patch)**2 + 1
    print(f'depth {args.depth}, dim {args.dim}, {args.heads} heads, {tokens} tokens, '
          f'batch {args.batch}, '
          f'{args.device}, torch threads {torch.get_num_threads()}, {args.steps} rounds')
    base_t, base_i = statistics.median(train_t['plain']), statistics.median(infer_t['plain'])
    for n in names:
        t, i = statistics.median(train_t[n]), statistics.median(infer_t[n])
        print(f'{n:>20}: train step {t * 1e3:8.1f} ms ({t / base_t:.3f}x)   '
              f'inference {i * 1e3:8.1f} ms ({i / base_i:.3f}x)   '
              f'{args.batch / t:7.1f} img/s train')


if __name__ == '__main__':
    main()
