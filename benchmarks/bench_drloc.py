#!/usr/bin/env python
"""DRLoc training-step overhead: ViT-S/16 (DeiT-S) at 224 px, with vs without DRLoc.

Both models share the same weights; one training step = ``loss`` (forward) + backward + AdamW
step. Steps of the two models are interleaved so machine load affects both alike; the script
prints the median wall time and the median process CPU time of each step and their ratios
(target: <= 1.03x). On a shared CPU the CPU-time ratio is the reliable one (wall time also counts
other processes). ``--predict`` also times inference, which must be ~1.00x (DRLoc is
training-only).

    OMP_NUM_THREADS=2 python benchmarks/bench_drloc.py     # ~2 min on an idle 2-core CPU
    python benchmarks/bench_drloc.py --batch 8 --reps 5 --predict --device cuda
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmpretrain.structures import DataSample  # noqa: E402

import mmvitreg  # noqa: E402,F401
from mmvitreg.registry import MODELS  # noqa: E402


def build(drloc: bool, num_classes: int = 100):
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=384))
    if drloc:
        cfg = dict(cfg, type='Regularized', host='ImageClassifier',
                   drloc=dict(num_pairs=64, variant='l1', loss_weight=0.1, pool_size=7,
                              in_channels=384))
    return MODELS.build(cfg)


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--reps', type=int, default=3, help='timed steps per model')
    parser.add_argument('--predict', action='store_true', help='also time predict()')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    plain, with_drloc = build(False).to(args.device), build(True).to(args.device)
    with_drloc.load_state_dict(plain.state_dict(), strict=False)
    models = {'baseline': plain, 'drloc': with_drloc}
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    labels = [DataSample().set_gt_label(i % 100) for i in range(args.batch)]

    def train_step(name):
        model, optim = models[name], optims[name]
        model.train()
        sync(args.device)
        start, cpu = time.perf_counter(), time.process_time()
        losses = model.loss(x, labels)
        sum(losses.values()).backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        sync(args.device)
        return time.perf_counter() - start, time.process_time() - cpu

    def predict_step(name):
        model = models[name]
        model.eval()
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            model.predict(x)
        sync(args.device)
        return time.perf_counter() - start

    for name in models:  # warm-up
        train_step(name)
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    pred_times = {name: [] for name in models}
    for rep in range(args.reps):
        order = list(models) if rep % 2 == 0 else list(models)[::-1]
        for name in order:
            wall, cpu = train_step(name)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        if args.predict:
            for name in order:
                pred_times[name].append(predict_step(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu_times.items()}
    extra = sum(p.numel() for p in with_drloc.drloc_head.parameters())
    print(f'ViT-S/16 224px, batch {args.batch}, {args.reps} interleaved steps, device '
          f'{args.device}, threads {torch.get_num_threads()}; '
          f'DRLoc head {extra / 1e6:.2f} M params')
    print(f'train step wall  baseline {med["baseline"]:.3f}s  drloc {med["drloc"]:.3f}s  '
          f'ratio {med["drloc"] / med["baseline"]:.3f}x (target <= 1.03x)')
    print(f'train step CPU   baseline {cmed["baseline"]:.3f}s  drloc {cmed["drloc"]:.3f}s  '
          f'ratio {cmed["drloc"] / cmed["baseline"]:.3f}x (target <= 1.03x)')
    if args.predict:
        pmed = {k: statistics.median(v) for k, v in pred_times.items()}
        print(f'predict wall     baseline {pmed["baseline"]:.3f}s  drloc {pmed["drloc"]:.3f}s  '
              f'ratio {pmed["drloc"] / pmed["baseline"]:.3f}x')


if __name__ == '__main__':
    main()
