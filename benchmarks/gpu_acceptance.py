"""DropKey GPU acceptance: one command, one table (needs torch + timm only; no OpenMMLab).

Measures on one GPU, side by side in one process:

1. fp16 AMP train steps (forward + backward + SGD step, ``GradScaler``) of a timm ViT-B/16 at
   224 px, batch 128: plain timm (flash SDPA, no DropKey) vs fused DropKey (FlexAttention, and
   the Triton flash kernel; ratio 0.1 decreasing with depth) vs the SDPA + bool-mask fallback;
   ms/step, images/s, the throughput ratio to flash (target: fused >= 0.95x), peak memory,
   finiteness of loss and grads.
2. The DropKey attention op alone (fp16, forward + backward) at every training shape of the
   shipped DropKey configs *with the host's own settings*: DeiT-S and ViT-B ImageNet, ViT-S/4
   CIFAR, DETR-R50 encoder at 800x1333 and decoder cross-attention (key padding, attention
   dropout 0.1), PlainViT-B global attention at N = 4096 (trainable relative-position bias);
   the host's own attention (SDPA, same mask and dropout) / DropKey as ``backend='auto'`` takes
   it (its path named) / the Triton flash kernel (``backend='triton'``; what ``auto`` takes with
   dropout or the trainable bias) on every shape / the SDPA fallback, and without dropout two
   FlexAttention diagnostics (the in-kernel hash instead of packed bits; FlexAttention with no
   DropKey): time, peak memory, finiteness, the largest difference of the output and every
   gradient (bias included) to the SDPA fallback (auto, no dropout) and to the written-out
   reference of the Triton kernel (its dropout bits are its own), and the dropped fraction
   measured on the GPU (target: auto <= 1.3x the host). The DETR and PlainViT shapes run twice:
   in fp16 (AMP) and in fp32, the dtype their shipped configs train in (no AMP there).
3. With ``--tile-sweep``: the Triton kernel at other tile shapes, warps, pipeline stages and
   (fp32) CUDA-core instead of 3xTF32 products, on the shipped configs' shapes (fp32) and ViT-B's,
   each timed against the host and compared with the default configuration's output and
   gradients (the data to tune the untuned default from).

Each row is printed as soon as it is measured, and ``--json`` rewritten with every row so far,
so a run stopped by a time limit still leaves what it measured; the table at the end adds the
train-step ratios. With ``TRITON_INTERPRET=1`` set, ``--dry-run`` on CPU runs the Triton variants
in Triton's interpreter (the test of this script does), so the GPU run meets no untried code.

DropKey is attached through mmvitreg's timm attention site (``mmvitreg.regularizers``) when it
imports, else by a local patch of timm's ``Attention.forward`` (same maths).

Usage::

    python benchmarks/gpu_acceptance.py                 # the full check (about 3-6 min on one GPU)
    python benchmarks/gpu_acceptance.py --dry-run       # tiny shapes, CPU ok: checks the script
    python benchmarks/gpu_acceptance.py --json out.json # also write the rows
    python benchmarks/gpu_acceptance.py --skip-train --tile-sweep  # ops + the tile sweep
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmvitreg.ops.dropkey import (DropKey, dropkey_attention, dropkey_modules,  # noqa: E402
                                  dropkey_ratios, naive_dropkey_attention, set_step)
from mmvitreg.ops.dropkey.masks import keep_mask_rows  # noqa: E402
from mmvitreg.ops.dropkey.random import call_key  # noqa: E402

# (name, batch, heads, queries, keys, head dim, host mask, attention dropout, dtype): the host's
# own settings in the shipped configs (mask: None, 'padding' = DETR's key padding on the second
# image, 'bias' = PlainViT's trainable decomposed relative-position bias, (B, heads, N, N);
# dtype: 'half' = fp16 AMP, 'fp32' = what the shipped DETR / QPIC / PlainViT configs train in:
# their OptimWrapper has no AMP)
OP_SHAPES = [
    ('DeiT-S IN1k b256, N197', 256, 6, 197, 197, 64, None, 0.0, 'half'),
    ('ViT-B IN1k b128, N197', 128, 12, 197, 197, 64, None, 0.0, 'half'),
    ('ViT-S/4 CIFAR b256, N65', 256, 6, 65, 65, 64, None, 0.0, 'half'),
    ('DETR enc b2, N850, pad, drop .1', 2, 8, 850, 850, 32, 'padding', 0.1, 'half'),
    ('DETR dec cross b2, 100x850, pad, drop .1', 2, 8, 100, 850, 32, 'padding', 0.1, 'half'),
    ('PlainViT-B global b1, N4096, bias', 1, 12, 4096, 4096, 64, 'bias', 0.0, 'half'),
    ('DETR enc b2, N850, pad, drop .1, fp32', 2, 8, 850, 850, 32, 'padding', 0.1, 'fp32'),
    ('DETR dec cross b2, 100x850, pad, drop .1, fp32', 2, 8, 100, 850, 32, 'padding', 0.1,
     'fp32'),
    ('PlainViT-B global b1, N4096, bias, fp32', 1, 12, 4096, 4096, 64, 'bias', 0.0, 'fp32'),
]
DRY_OP_SHAPES = [('tiny b2, N17', 2, 2, 17, 17, 16, None, 0.0, 'half'),
                 ('tiny cross b2, 5x17, pad, drop .1', 2, 2, 5, 17, 16, 'padding', 0.1, 'half'),
                 ('tiny b1, N20, bias', 1, 2, 20, 20, 16, 'bias', 0.0, 'half'),
                 ('tiny cross b2, 5x17, pad, drop .1, fp32', 2, 2, 5, 17, 16, 'padding', 0.1,
                  'fp32')]
# --tile-sweep: the Triton kernel's configurations (rows held, rows streamed, warps, stages[,
# fp32 products]; see TritonConfig) timed on the shapes the shipped configs train (in their
# dtype) and on ViT-B. The defaults (triton_flash.default_config: on sm_90 64 held x 64 / 32 /
# 16 streamed for fp16 / fp16 with dropout / fp32, 4 warps, 2 stages, fp32 as 3 TF32 products)
# were chosen without a GPU, as the largest tiles ptxas builds without spilling registers
# (tools/analysis_tools/dropkey_triton_build.py). 'ieee' rows: fp32 on CUDA cores (fp32 shapes
# only). A configuration that does not fit the GPU's shared memory is reported as failed.
SWEEP_SHAPES = ['ViT-B IN1k b128, N197', 'DETR enc b2, N850, pad, drop .1, fp32',
                'DETR dec cross b2, 100x850, pad, drop .1, fp32',
                'PlainViT-B global b1, N4096, bias, fp32']
SWEEP_CONFIGS = [(64, 64, 4, 2), (64, 32, 4, 2), (64, 16, 4, 2), (64, 32, 4, 3), (64, 32, 8, 2),
                 (128, 32, 8, 2), (128, 16, 8, 2), (128, 64, 8, 2), (32, 32, 4, 2),
                 (64, 16, 4, 2, 'ieee')]
DRY_SWEEP_SHAPES = ['tiny b1, N20, bias', 'tiny cross b2, 5x17, pad, drop .1, fp32']
DRY_SWEEP_CONFIGS = [(16, 16, 4, 2), (32, 16, 4, 2), (16, 16, 4, 2, 'ieee')]


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
                      dry_run: bool, live: Callable[[dict], None] = print) -> List[dict]:
    torch.manual_seed(0)
    amp_dtype = _half_dtype(device)
    variants = [('flash, no DropKey', None), ('DropKey fused (flex)', 'flex'),
                ('DropKey fused (triton)', 'triton'), ('DropKey fallback (sdpa)', 'sdpa')]
    if device != 'cuda':  # FlexAttention backward needs CUDA
        variants = [v for v in variants if v[1] != 'flex']
    if not _triton_runs(device):
        variants = [v for v in variants if v[1] != 'triton']
    base = build_vit('vit_base_patch16_224', dry_run)
    state = base.state_dict()
    img = 32 if dry_run else 224
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, 10 if dry_run else 1000, (batch, ), device=device)
    rows = []
    for name, backend in variants:
        try:
            rows.append(_train_variant(name, backend, state, x, y, device, batch, steps, warmup,
                                       dry_run, amp_dtype))
            live(rows[-1])
        except Exception as err:  # report and go on: one run of this script must answer all
            print(f'train step {name} failed: {type(err).__name__}: {str(err)[:300]}')
            rows.append(dict(part='train step', name=name, ms=float('nan'), img_s=None,
                             peak_mb=None, finite=False, attached='-'))
            live(rows[-1])
        if device == 'cuda':
            torch.cuda.empty_cache()
    ref = rows[0]['ms']
    for r in rows:
        r['ratio'] = ref / r['ms']  # throughput relative to flash
    return rows


def _train_variant(name, backend, state, x, y, device, batch, steps, warmup, dry_run,
                   amp_dtype) -> dict:
    """One variant's AMP train steps: median ms, images/s, peak memory, finiteness."""
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
    return dict(part='train step', name=name, ms=ms, img_s=batch / ms * 1e3,
                peak_mb=_peak(device, base_mem), finite=finite_loss and finite_grad,
                attached=how)


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


def _triton_runs(device: str) -> bool:
    """The Triton kernels run on CUDA, and on CPU in Triton's interpreter."""
    from mmvitreg.ops.dropkey.triton_flash import triton_available
    return triton_available() and (device == 'cuda' or os.environ.get('TRITON_INTERPRET') == '1')


def _half_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA; on CPU bf16, or fp16 where the Triton interpreter runs (it mis-computes
    bf16: numpy has no such type)."""
    return torch.float16 if device == 'cuda' or _triton_runs(device) else torch.bfloat16


def _max_diff(first: List[torch.Tensor], second: List[torch.Tensor]) -> Optional[float]:
    if not first or not second:
        return None
    return max(float((x - y).abs().max()) for x, y in zip(first, second))


def _host_mask(kind: Optional[str], b: int, h: int, nq: int, nk: int, device: str, dtype):
    if kind == 'padding':  # DETR: the second image is padded on a quarter of its keys
        mask = torch.ones(b, 1, 1, nk, dtype=torch.bool, device=device)
        mask[-1, ..., -(nk // 4):] = False
        return mask
    if kind == 'bias':
        return (0.5 * torch.randn(b, h, nq, nk, device=device, dtype=dtype)).requires_grad_()
    return None


def _forward_backward(attention: Callable[[], torch.Tensor], inputs, grad: torch.Tensor,
                      outs: dict, name) -> Callable[[], None]:
    """One timed unit: ``attention()`` forward and backward of ``grad``; its output and the
    gradients of ``inputs`` kept as ``outs[name]`` (to compare variants)."""
    def fn():
        for t in inputs:
            t.grad = None
        out = attention()
        out.backward(grad)
        outs[name] = [out.detach().float()] + [t.grad.float() for t in inputs]
    return fn


def _op_inputs(shape, device: str):
    """q, k, v, the host mask and the output's gradient of one ``OP_SHAPES`` row."""
    name, b, h, nq, nk, d, mask_kind, dropout, dtype = shape
    dtype = torch.float32 if dtype == 'fp32' else _half_dtype(device)
    torch.manual_seed(0)
    q = torch.randn(b, h, nq, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(b, h, nk, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(b, h, nk, d, device=device, dtype=dtype, requires_grad=True)
    mask = _host_mask(mask_kind, b, h, nq, nk, device, dtype)
    return q, k, v, mask, torch.randn(b, h, nq, d, device=device, dtype=dtype)


def bench_configs(device: str, shapes, configs, reps: int, ratio: float = 0.1,
                  live: Callable[[dict], None] = print) -> List[dict]:
    """The Triton kernel (forward + backward) at each configuration on each shape: time, its
    ratio to the host's own attention, and the largest difference of the output and every
    gradient to the default configuration's (the same drop bits: float rounding only)."""
    from mmvitreg.ops.dropkey.triton_flash import (TritonConfig, cuda_arch, default_config,
                                                   triton_dropkey_attention)
    rows = []
    for shape in shapes:
        name, mask_kind, dropout = shape[0], shape[6], shape[7]
        q, k, v, mask, g = _op_inputs(shape, device)
        inputs = (q, k, v) + ((mask, ) if mask_kind == 'bias' else ())
        key = call_key(0, 0, seed=1)
        outs = {}

        def run(config):
            def attention():
                if config == 'host':
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          dropout_p=dropout)
                return triton_dropkey_attention(q, k, v, ratio, key, attn_mask=mask,
                                                dropout_p=dropout, config=config)
            return _forward_backward(attention, inputs, g, outs, config)

        arch = cuda_arch() if device == 'cuda' else None
        default = default_config(arch, q.dtype, q.shape[-1], v.shape[-1], dropout > 0)
        others = [TritonConfig(*c) for c in configs]
        others = [c for c in others if c != default
                  and (q.dtype == torch.float32 or c.fp32_dots == default.fp32_dots)]
        host = _op_time(run('host'), device, reps)['ms']
        for config in [default] + others:
            try:
                res = _op_time(run(config), device, reps)
                diff = _max_diff(outs[config], outs.get(default, []))
            except Exception as err:  # e.g. tiles that do not fit shared memory
                print(f'{name}: {tuple(config)} failed: {type(err).__name__}: {str(err)[:200]}')
                res, diff = dict(ms=float('nan'), peak_mb=None), None
            label = '{}x{} w{} s{}'.format(*config)
            if q.dtype == torch.float32:
                label += f' {config.fp32_dots}'
            label += ' (default)' if config == default else ''
            rows.append(dict(part='tile sweep', name=f'{name}: triton {label}', ms=res['ms'],
                             ratio=res['ms'] / host, peak_mb=res['peak_mb'],
                             finite=all(bool(torch.isfinite(t).all())
                                        for ts in outs.values() for t in ts),
                             max_diff_fused=diff))
            live(rows[-1])
        del q, k, v, g, outs, mask, inputs
        if device == 'cuda':
            torch.cuda.empty_cache()
    return rows


def bench_ops(device: str, shapes, reps: int, ratio: float = 0.1,
              live: Callable[[dict], None] = print) -> List[dict]:
    """Per shape: the host's own attention (SDPA with the same host mask and dropout), DropKey as
    ``backend='auto'`` takes it (the path named), the SDPA fallback, and without dropout the
    FlexAttention diagnostics: the in-kernel hash instead of packed bits, and FlexAttention with
    no mask at all (what the kernel costs by itself)."""
    from mmvitreg.ops.dropkey.attention import dropkey_path
    from mmvitreg.ops.dropkey.flex import _compiled_flex, flex_dropkey_attention, flex_failure
    from mmvitreg.ops.dropkey.triton_flash import (reference_attention, triton_dropkey_attention,
                                                   triton_failure)
    rows = []
    for shape in shapes:
        name, b, h, nq, nk, d, mask_kind, dropout, _ = shape
        q, k, v, mask, g = _op_inputs(shape, device)
        inputs = (q, k, v) + ((mask, ) if mask_kind == 'bias' else ())
        key = call_key(0, 0, seed=1)
        path = dropkey_path(q, k, v, ratio, attn_mask=mask, dropout_p=dropout)
        outs = {}

        def run(variant):
            def attention():
                if variant == 'host':
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          dropout_p=dropout)
                if variant == 'flex-floor':  # the host's bias only, no DropKey
                    return _compiled_flex()(q, k, v, score_mod=None if mask is None else (
                        lambda score, bi, hi, qi, ki: score + mask[bi, hi, qi, ki]))
                if variant == 'triton-logit':  # one hash per logit instead of per 4 keys
                    return triton_dropkey_attention(q, k, v, ratio, key, attn_mask=mask,
                                                    dropout_p=dropout, lanes='logit')
                if variant == 'reference':  # the Triton kernel's maths, written out
                    return reference_attention(q, k, v, ratio, key, attn_mask=mask,
                                               dropout_p=dropout)
                if variant == 'flex-hash':
                    return flex_dropkey_attention(q, k, v, ratio, key, attn_mask=mask,
                                                  mask_source='hash')
                return dropkey_attention(q, k, v, ratio, attn_mask=mask, key=key,
                                         dropout_p=dropout, backend=variant)
            return _forward_backward(attention, inputs, g, outs, variant)

        variants = ['host', 'auto', 'sdpa']
        if _triton_runs(device):
            variants[2:2] = ['triton', 'triton-logit']
        if device == 'cuda' and dropout == 0:
            variants += ['flex-hash', 'flex-floor']
        res = {}
        for vr in variants:
            try:
                res[vr] = _op_time(run(vr), device, reps)
            except Exception as err:  # report and go on: one run of this script must answer all
                print(f'{name}: {vr} failed: {type(err).__name__}: {str(err)[:300]}')
                res[vr] = dict(ms=float('nan'), peak_mb=None)
                outs.pop(vr, None)
        if 'auto' not in outs or 'sdpa' not in outs:
            outs.setdefault('auto', []), outs.setdefault('sdpa', [])
        finite = all(bool(torch.isfinite(t).all()) for ts in outs.values() for t in ts)
        agree = {}
        if dropout == 0 and path != 'sdpa':  # same maths as the SDPA path
            agree['auto'] = _max_diff(outs['auto'], outs['sdpa'])
        if 'triton' in outs:
            try:  # untimed: one call of the reference (fp32 logits)
                run('reference')()
                agree['triton'] = _max_diff(outs['triton'], outs.pop('reference'))
                if 'triton-logit' in outs:  # the same bits: 0
                    agree['triton-logit'] = _max_diff(outs['triton-logit'], outs['triton'])
                if path == 'triton':
                    agree['auto'] = _max_diff(outs['auto'], outs['triton'])
            except Exception as err:
                print(f'{name}: reference failed: {type(err).__name__}: {str(err)[:300]}')
        keep = keep_mask_rows(key, (b, h, nq, nk), 0, nq, ratio, device=device)
        dropped = 1 - keep.float().mean().item()
        plain = res['host']
        labels = dict(host='host (SDPA)', auto=f'DropKey auto ({path})', sdpa='DropKey sdpa',
                      triton='DropKey triton (flash, hash + dropout in-kernel)',
                      **{'triton-logit': 'DropKey triton, one hash per logit'},
                      **{'flex-hash': 'DropKey flex, in-kernel hash',
                         'flex-floor': 'FlexAttention, no mask'})
        for vr in variants:
            rows.append(dict(part='op fwd+bwd', name=f'{name}: {labels[vr]}', ms=res[vr]['ms'],
                             ratio=res[vr]['ms'] / plain['ms'], peak_mb=res[vr]['peak_mb'],
                             finite=finite, max_diff_fused=agree.get(vr),
                             dropped=dropped if vr in ('auto', 'sdpa', 'flex-hash') else None,
                             path=path if vr == 'auto' else None))
            live(rows[-1])
        del q, k, v, g, outs, mask, inputs
        if device == 'cuda':
            torch.cuda.empty_cache()
    if flex_failure():
        print(f'FlexAttention was turned off during the run: {flex_failure()}')
    if triton_failure():
        print(f'The Triton kernel was turned off during the run: {triton_failure()}')
    return rows


def print_table(rows: List[dict], device_name: str) -> None:
    print(f'\nDropKey GPU acceptance on {device_name} (torch {torch.__version__})')
    width = max([len(r['name']) for r in rows] + [7])
    print(f'{"part":<11} {"variant":<{width}} {"ms":>9} {"ratio":>7} {"img/s":>8} {"peak MB":>9} '
          f'{"finite":>6} {"dropped":>8} {"|fused-fb|":>10}')
    for r in rows:
        img = f'{r["img_s"]:.0f}' if r.get('img_s') else '-'
        peak = f'{r["peak_mb"]:.0f}' if r.get('peak_mb') is not None else '-'
        drop = f'{r["dropped"]:.4f}' if r.get('dropped') is not None else '-'
        diff = f'{r["max_diff_fused"]:.1e}' if r.get('max_diff_fused') is not None else '-'
        print(f'{r["part"]:<11} {r["name"]:<{width}} {r["ms"]:>9.2f} {r["ratio"]:>7.3f} {img:>8} '
              f'{peak:>9} {str(r["finite"]):>6} {drop:>8} {diff:>10}')
    print('train-step ratio = throughput relative to flash (target: fused >= 0.95); op ratio = '
          "time relative to the host's own attention with the same mask and dropout (target: "
          'DropKey auto <= 1.3); dropped = measured fraction (ratio 0.1); |fused-fb| = largest '
          'difference of the output and every gradient: auto vs the SDPA fallback (no '
          'dropout) or vs triton; triton vs its written-out reference (fp32 logits); '
          'one hash per logit vs triton (same bits: 0); tile sweep: vs the default configuration')


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
    parser.add_argument('--tile-sweep', action='store_true',
                        help="also time the Triton kernel's other configurations "
                             '(SWEEP_CONFIGS)')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args(argv)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    # one process compiles FlexAttention for many shapes and score_mods (each row's variants):
    # more than Dynamo's default 8 recompiles, after which it would run FlexAttention unfused
    for name in ('recompile_limit', 'cache_size_limit'):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    if device == 'cpu' and not args.dry_run:
        print('no GPU: running the --dry-run sizes on CPU')
        args.dry_run = True
    if args.dry_run:
        args.batch, args.steps, args.warmup, args.reps = 4, 1, 1, 1
    name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU'
    t0 = time.time()
    rows = []  # every row as measured, printed and saved at once: a run stopped by a time
    # limit still leaves what it measured (the table at the end adds the train-step ratios)

    def live(row: dict) -> None:
        rows.append(row)
        ms = f'{row["ms"]:.2f} ms' if row['ms'] == row['ms'] else 'failed'
        print(f'[{time.time() - t0:4.0f} s] {row["part"]}: {row["name"]}: {ms}', flush=True)
        _save(args.json, name, rows)

    if not args.skip_train:
        bench_train_steps(device, args.batch, args.steps, args.warmup, args.dry_run, live)
    shapes = DRY_OP_SHAPES if args.dry_run else OP_SHAPES
    bench_ops(device, shapes, args.reps, live=live)
    if args.tile_sweep and _triton_runs(device):
        names = DRY_SWEEP_SHAPES if args.dry_run else SWEEP_SHAPES
        bench_configs(device, [s for s in shapes if s[0] in names],
                      DRY_SWEEP_CONFIGS if args.dry_run else SWEEP_CONFIGS, args.reps,
                      live=live)
    print_table(rows, name)
    print(f'total {time.time() - t0:.0f} s')
    _save(args.json, name, rows)
    return rows


def _save(path: Optional[str], device_name: str, rows: List[dict]) -> None:
    """The rows as JSON at ``path`` (replaced whole: never a half-written file; written here
    because mmvitreg.utils.atomic_file needs mmengine, which the GPU machine lacks)."""
    if path:
        with open(path + '.tmp', 'w') as f:
            json.dump(dict(device=device_name, torch=torch.__version__, rows=rows), f, indent=1)
        os.replace(path + '.tmp', path)


if __name__ == '__main__':
    main()
