#!/usr/bin/env python
"""DHVT-T (patch 4) training-step throughput on 32x32 inputs, batch 64, side by side with a
same-width plain ViT (mmpretrain VisionTransformer, 192-d, 12 layers, patch 4) and, with
``--with-dropkey``, DHVT-T with DropKey (ratio 0.1) attached. Rounds are interleaved so the
machine's load affects all models alike; the report is the median step time and its ratio to the
ViT baseline.

    OMP_NUM_THREADS=2 python benchmarks/bench_dhvt.py [--steps 2] [--batch 64] [--device cpu]
        [--with-dropkey]

About 6 training steps of ~6M-parameter models at batch 64: ~1-2 min on an idle 2-core CPU.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS


def build(name: str) -> nn.Module:
    head = dict(type='VisionTransformerClsHead', num_classes=100, in_channels=192,
                loss=dict(type='CrossEntropyLoss'))
    if name == 'ViT-T p4':
        backbone = dict(type='VisionTransformer', img_size=32, patch_size=4, drop_path_rate=0.1,
                        arch=dict(embed_dims=192, num_layers=12, num_heads=4,
                                  feedforward_channels=768))
    elif name == 'DHVT-T p4':
        backbone = dict(type='DHVT', arch='tiny', patch_size=4, drop_path_rate=0.1)
    else:
        backbone = dict(type='DHVT', arch='tiny', patch_size=4, drop_path_rate=0.1,
                        dropkey=dict(ratio=0.1, schedule='constant'))
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone, head=head))


def step(model, opt, x, y) -> float:
    t0 = time.perf_counter()
    logits = model(x, mode='tensor')
    loss = nn.functional.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=2, help='measured rounds per model')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--with-dropkey', action='store_true',
                        help='also time DHVT-T with DropKey in every HI-MHSA layer')
    args = parser.parse_args()
    torch.manual_seed(0)
    names = ['ViT-T p4', 'DHVT-T p4'] + (['DHVT-T p4 + DropKey'] if args.with_dropkey else [])
    models = {n: build(n).to(args.device).train() for n in names}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-3) for n, m in models.items()}
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    y = torch.randint(0, 100, (args.batch, ), device=args.device)
    for n in names:  # warm-up
        step(models[n], opts[n], x, y)
    times = {n: [] for n in names}
    for _ in range(args.steps):
        for n in names:
            times[n].append(step(models[n], opts[n], x, y))
    print(f'device={args.device} threads={torch.get_num_threads()} batch={args.batch} '
          f'input=32x32 rounds={args.steps}')
    base = statistics.median(times[names[0]])
    print(f'{"model":<22}{"params":>9}{"ms/step":>10}{"img/s":>9}{"x ViT-T":>9}')
    for n in names:
        med = statistics.median(times[n])
        params = sum(p.numel() for p in models[n].parameters()) / 1e6
        print(f'{n:<22}{params:>8.2f}M{med * 1e3:>10.1f}{args.batch / med:>9.1f}'
              f'{med / base:>9.2f}')


if __name__ == '__main__':
    main()
