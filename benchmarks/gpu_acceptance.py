"""DropKey GPU acceptance: one command, one table (needs torch + timm only; no OpenMMLab).

Measures on one GPU, side by side in one process:

1. fp16 AMP train steps (forward + backward + SGD step, ``GradScaler``) of a timm ViT-B/16 at
   224 px, batch 128: plain timm (flash SDPA, no DropKey) vs fused DropKey (FlexAttention,
   ratio 0.1 decreasing with depth) vs the SDPA + bool-mask fallback; ms/step, images/s, the
   throughput ratio to flash (target: fused >= 0.95x), peak memory, finiteness of loss and grads.
2. The DropKey attention op alone (fp16 autocast, forward + backward) at every training shape of
   the shipped DropKey configs: DeiT-S and ViT-B ImageNet, ViT-S/4 CIFAR, DETR-R50 encoder at
   800x1333 and decoder cross-attention (with key padding), PlainViT-B global attention at
   N = 4096; flash / fused / fallback time and peak memory, finiteness, fused-vs-fallback
   agreement and the dropped fraction measured on the GPU (target: the ratio).

DropKey is attached through mmvitreg's timm attention site (``mmvitreg.regularizers``) when it
imports, else by a local patch of timm's ``Attention.forward`` (same maths).

Usage::

    python benchmarks/gpu_acceptance.py                 # the full check (about 3-6 min on one GPU)
    python benchmarks/gpu_acceptance.py --dry-run       # tiny shapes, CPU ok: checks the script
    python benchmarks/gpu_acceptance.py --json out.json # also write the rows
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmvitreg.ops.dropkey import (DropKey, dropkey_attention, dropkey_modules,  # noqa: E402
                                  dropkey_ratios, naive_dropkey_attention, set_step)
from mmvitreg.ops.dropkey.masks import keep_mask_rows  # noqa: E402
from mmvitreg.ops.dropkey.random import call_key  # noqa: E402

# (name, batch, heads, queries, keys, head dim, key padding)
OP_SHAPES = [
    ('DeiT-S IN1k b256, N197', 256, 6, 197, 197, 64, False),
    ('ViT-B IN1k b128, N197', 128, 12, 197, 197, 64, False),
    ('ViT-S/4 CIFAR b256, N65', 256, 6, 65, 65, 64, False),
    ('DETR enc 800x1333 b2, N850', 2, 8, 850, 850, 32, True),
    ('DETR dec cross b2, 100x850', 2, 8, 100, 850, 32, True),
    ('PlainViT-B global b1, N4096', 1, 12, 4096, 4096, 64, False),
]
DRY_OP_SHAPES = [('tiny b2, N17', 2, 2, 17, 17, 16, False),
                 ('tiny cross b2, 5x17', 2, 2, 5, 17, 16, True)]


# ------------------------------------------------------------------------------------------------
# DropKey on timm ViTs
# ------------------------------------------------------------------------------------------------
def _patch_timm_attention(model: torch.nn.Module, ratios: List[float], backend: str) -> str:
    """Fallback attachment: a DropKey child + a forward computing q, k, v as timm does."""
    from timm.models.vision_transformer import Attention

    def forward(self, x, attn_mask=None, **kwargs):
        if not self.dropkey.active:
            return self._dk_original(x, attn_mask=attn_mask) if attn_mask is not None \
                else self._dk_original(x)
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = self.dropkey(q, k, v, attn_mask=attn_mask,
                           dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, -1)
        out = self.norm(out) if hasattr(self, 'norm') else out
        return self.proj_drop(self.proj(out))

    mods = [m for m in model.modules() if isinstance(m, Attention)]
    for i, (m, r) in enumerate(zip(mods, ratios)):
        m.add_module('dropkey', DropKey(r, backend=backend, layer_id=i))
        m._dk_original = m.forward
        m.forward = forward.__get__(m)
    return 'local patch of timm Attention'


def attach_dropkey_timm(model: torch.nn.Module, ratio: float = 0.1,
                        backend: str = 'auto') -> str:
    """DropKey (ratio decreasing linearly with depth) on every attention of a timm ViT; returns
    how it was attached."""
    from timm.models.vision_transformer import Attention
    num = sum(isinstance(m, Attention) for m in model.modules())
    try:
        from mmvitreg.regularizers import apply_regularizers
    except ImportError:
        return _patch_timm_attention(model, dropkey_ratios(num, ratio), backend)
    apply_regularizers(model, dropkey=dict(ratio=ratio, schedule='decrease', backend=backend))
    return "mmvitreg's timm attention site"


class NaiveDropKey(DropKey):
    """The paper's two lines (explicit logits, float Bernoulli mask * -1e12) in DropKey's place."""

    def forward(self, q, k, v, attn_mask=None, dropout_p=0.0, scale=None, **kwargs):
        if not self.active:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        return naive_dropkey_attention(q, k, v, self.ratio, scale)


def naivify(model: torch.nn.Module) -> torch.nn.Module:
    for m in dropkey_modules(model):
        m.__class__ = NaiveDropKey
    return model


def build_vit(arch: str, dry_run: bool) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer
    if dry_run:
        return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                                 num_classes=10)
    dims = {'vit_small_patch16_224': (384, 6), 'vit_base_patch16_224': (768, 12)}[arch]
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=dims[0], depth=12,
                             num_heads=dims[1], num_classes=1000)


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _reset_peak(device: str) -> int:
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def _peak(device: str, base: int) -> Optional[float]:
    if device == 'cuda':
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return None


def bench_train_steps(device: str, batch: int, steps: int, warmup: int,
                      dry_run: bool) -> List[dict]:
    torch.manual_seed(0)
    amp_dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    variants = [('flash, no DropKey', None), ('DropKey fused (flex)', 'flex'),
                ('DropKey fallback (sdpa)', 'sdpa')]
    if device != 'cuda':  # FlexAttention backward needs CUDA
        variants = [v for v in variants if v[1] != 'flex']
    base = build_vit('vit_base_patch16_224', dry_run)
    state = base.state_dict()
    img = 32 if dry_run else 224
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, 10 if dry_run else 1000, (batch, ), device=device)
    rows = []
    for name, backend in variants:
        model = build_vit('vit_base_patch16_224', dry_run)
        model.load_state_dict(state)
        how = '-'
        if backend is not None:
            how = attach_dropkey_timm(model, 0.1, backend)
        model.to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        scaler = torch.amp.GradScaler(device, enabled=device == 'cuda')
        times, finite_loss, finite_grad = [], True, True
        base_mem = _reset_peak(device)
        for it in range(warmup + steps):
            set_step(it)
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=amp_dtype):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            finite_grad &= all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
                               if p.grad is not None)
            scaler.step(opt)
            scaler.update()
            _sync(device)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
            finite_loss &= bool(torch.isfinite(loss))
        ms = statistics.median(times) * 1e3
        rows.append(dict(part='train step', name=name, ms=ms, img_s=batch / ms * 1e3,
                         peak_mb=_peak(device, base_mem), finite=finite_loss and finite_grad,
                         attached=how))
        del model, opt
        if device == 'cuda':
            torch.cuda.empty_cache()
    ref = rows[0]['ms']
    for r in rows:
        r['ratio'] = ref / r['ms']  # throughput relative to flash
    return rows


def _op_time(fn, device: str, reps: int) -> Dict[str, float]:
    fn()  # warm-up (and compilation)
    base = _reset_peak(device)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return dict(ms=statistics.median(times) * 1e3, peak_mb=_peak(device, base))


def bench_ops(device: str, shapes, reps: int, ratio: float = 0.1) -> List[dict]:
    dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    rows = []
    for name, b, h, nq, nk, d, padded in shapes:
        torch.manual_seed(0)
        q = torch.randn(b, h, nq, d, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(b, h, nk, d, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(b, h, nk, d, device=device, dtype=dtype, requires_grad=True)
        mask = None
        if padded:  # DETR: the second image is padded on a quarter of its keys
            mask = torch.ones(b, 1, 1, nk, dtype=torch.bool, device=device)
            mask[-1, ..., -(nk // 4):] = False
        g = torch.randn(b, h, nq, d, device=device, dtype=dtype)
        key = call_key(0, 0, seed=1)
        outs = {}

        def run(backend):
            def fn():
                for t in (q, k, v):
                    t.grad = None
                if backend is None:
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                else:
                    out = dropkey_attention(q, k, v, ratio, attn_mask=mask, key=key,
                                            backend=backend)
                out.backward(g)
                outs[backend] = (out.detach().float(), q.grad.float())
            return fn

        backends = [None, 'sdpa'] + (['flex'] if device == 'cuda' else [])
        res = {bk: _op_time(run(bk), device, reps) for bk in backends}
        finite = all(bool(torch.isfinite(o).all() and torch.isfinite(gq).all())
                     for o, gq in outs.values())
        agree = None
        if 'flex' in outs:
            agree = float((outs['flex'][0] - outs['sdpa'][0]).abs().max())
        keep = keep_mask_rows(key, (b, h, nq, nk), 0, nq, ratio, device=device)
        dropped = 1 - keep.float().mean().item()
        plain = res[None]
        for bk, label in ((None, 'flash'), ('flex', 'fused'), ('sdpa', 'fallback')):
            if bk not in res:
                continue
            rows.append(dict(part='op fwd+bwd', name=f'{name}: {label}', ms=res[bk]['ms'],
                             ratio=res[bk]['ms'] / plain['ms'], peak_mb=res[bk]['peak_mb'],
                             finite=finite, max_diff_fused=agree if bk == 'flex' else None,
                             dropped=dropped if bk is not None else None))
        del q, k, v, g, outs
        if device == 'cuda':
            torch.cuda.empty_cache()
    return rows


def print_table(rows: List[dict], device_name: str) -> None:
    print(f'\nDropKey GPU acceptance on {device_name} (torch {torch.__version__})')
    print(f'{"part":<11} {"variant":<44} {"ms":>9} {"ratio":>7} {"img/s":>8} {"peak MB":>9} '
          f'{"finite":>6} {"dropped":>8} {"|fused-fb|":>10}')
    for r in rows:
        img = f'{r["img_s"]:.0f}' if r.get('img_s') else '-'
        peak = f'{r["peak_mb"]:.0f}' if r.get('peak_mb') is not None else '-'
        drop = f'{r["dropped"]:.4f}' if r.get('dropped') is not None else '-'
        diff = f'{r["max_diff_fused"]:.1e}' if r.get('max_diff_fused') is not None else '-'
        print(f'{r["part"]:<11} {r["name"]:<44} {r["ms"]:>9.2f} {r["ratio"]:>7.3f} {img:>8} '
              f'{peak:>9} {str(r["finite"]):>6} {drop:>8} {diff:>10}')
    print('train-step ratio = throughput relative to flash (target: fused >= 0.95); op ratio = '
          'time relative to flash; dropped = measured fraction (ratio 0.1)')


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny model and shapes (CPU ok): checks that the script runs')
    parser.add_argument('--device', default=None, help='cuda (default when present) or cpu')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--reps', type=int, default=5, help='timed repetitions per op')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args(argv)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cpu' and not args.dry_run:
        print('no GPU: running the --dry-run sizes on CPU')
        args.dry_run = True
    if args.dry_run:
        args.batch, args.steps, args.warmup, args.reps = 4, 1, 1, 1
    name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU'
    t0 = time.time()
    rows = []
    if not args.skip_train:
        rows += bench_train_steps(device, args.batch, args.steps, args.warmup, args.dry_run)
    rows += bench_ops(device, DRY_OP_SHAPES if args.dry_run else OP_SHAPES, args.reps)
    print_table(rows, name)
    print(f'total {time.time() - t0:.0f} s')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=name, torch=torch.__version__, rows=rows), f, indent=1)
    return rows


if __name__ == '__main__':
    main()
