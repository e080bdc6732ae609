"""What a benchmark run trains with and what a plan costs: the per-GPU batch and LR on
``--gpus-per-run`` processes, the checkpoints a run keeps, and the GPU-hours and disk of a plan.

Batch (``--batch-policy``). A preset's *total batch* is its ``auto_scale_lr.base_batch_size``,
mmengine's own statement of the batch its LR is tuned for (128 for ``1xb128``, 1024 for
``4xb256``):

* ``keep-total`` (default): every run trains with that total batch and the preset's LR whatever
  ``--gpus-per-run`` is: ``train_dataloader.batch_size`` = total / processes, refused when it
  does not divide. The recipe the preset names is what runs.
* ``scale-lr``: the config's per-GPU batch is kept and mmengine's ``auto_scale_lr``
  (``enable=True``) scales the LR by (processes x per-GPU batch) / ``base_batch_size`` (the
  linear scaling rule), so the total batch grows with the GPUs.

A config without ``base_batch_size`` runs unchanged on one process and is refused on more.

Checkpoints (``--keep-checkpoints N``, default 1): ``default_hooks.checkpoint.max_keep_ckpts = N``
(the last N; resume needs the last one), plus the best one where the preset sets ``save_best``.
Retention changes no result, so it is not part of a run's fingerprint.

Estimates: a preset may declare ``benchmark.resources = dict(gpu_hours_per_epoch=..,
checkpoint_gb=.., source='..')``; a run needs ``gpu_hours_per_epoch`` x its epochs (linear
scaling over GPUs assumed) and keeps :func:`kept_checkpoints` x ``checkpoint_gb`` on disk.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

__all__ = ['BATCH_POLICIES', 'BatchError', 'fit_batch', 'bound_checkpoints', 'kept_checkpoints',
           'batch_header', 'VariantPlan', 'plan_variant', 'estimate_lines', 'batch_text']

BATCH_POLICIES = ('keep-total', 'scale-lr')


class BatchError(ValueError):
    """The preset's total batch cannot be kept (or the LR rescaled) on this many processes."""


def _lr(cfg) -> Optional[float]:
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    lr = optimizer.get('lr') if isinstance(optimizer, dict) else None
    return float(lr) if isinstance(lr, (int, float)) else None


def fit_batch(cfg, processes: int, policy: str = 'keep-total') -> Dict[str, Any]:
    """Set the run config's per-GPU batch (and ``auto_scale_lr``) for ``processes`` processes
    by ``policy`` (module docstring); return ``dict(processes, per_gpu, total, lr, lr_scale)``
    (``lr``: the config's, ``lr_scale``: what mmengine multiplies it by). ``{}`` without a
    train dataloader."""
    if policy not in BATCH_POLICIES:
        raise ValueError(f'--batch-policy must be one of {BATCH_POLICIES}, got {policy!r}')
    loader = cfg.get('train_dataloader')
    if not loader or not isinstance(loader.get('batch_size'), int):
        return {}
    scale_cfg = cfg.get('auto_scale_lr') or {}
    base = scale_cfg.get('base_batch_size')
    per_gpu, scale = loader['batch_size'], 1.0
    if not base:
        if processes > 1:
            raise BatchError(f'the config declares no auto_scale_lr.base_batch_size, so the total '
                             f'batch its LR is tuned for is unknown: declare it to run on '
                             f'--gpus-per-run {processes}')
    elif policy == 'keep-total':
        if base % processes:
            raise BatchError(f'total batch {base} (auto_scale_lr.base_batch_size) does not split '
                             f'over --gpus-per-run {processes}: use a count that divides it, or '
                             '--batch-policy scale-lr')
        per_gpu = loader['batch_size'] = base // processes  # (an enabled auto_scale_lr: x 1)
    else:
        cfg.auto_scale_lr = dict(scale_cfg, enable=True)
        scale = per_gpu * processes / base
    return dict(processes=processes, per_gpu=per_gpu, total=per_gpu * processes, lr=_lr(cfg),
                lr_scale=scale)


def batch_text(batch: Dict[str, Any]) -> str:
    """``'8 x 16 = 128, lr 0.001'`` (``lr 0.001 x 8`` when mmengine scales it)."""
    if not batch:
        return ''
    text = f"{batch['processes']} x {batch['per_gpu']} = {batch['total']}"
    if batch['lr'] is not None:
        text += f", lr {batch['lr']:.3g}" + (f" x {batch['lr_scale']:.3g}"
                                              if batch['lr_scale'] != 1 else '')
    return text


def batch_header(policy: str, processes: int) -> str:
    """The plan's line saying what ``--batch-policy`` does with ``--gpus-per-run``."""
    if policy == 'keep-total':
        return (f'batch policy keep-total: every run keeps its preset\'s total batch '
                f'(auto_scale_lr.base_batch_size) and LR; per-GPU batch = total / {processes} '
                '(--gpus-per-run)')
    return (f'batch policy scale-lr: every run keeps its config\'s per-GPU batch on {processes} '
            'GPUs (--gpus-per-run); mmengine\'s auto_scale_lr scales the LR by total / '
            'base_batch_size')


def bound_checkpoints(cfg, keep: Optional[int]) -> None:
    """Keep at most the last ``keep`` checkpoints of the run (``None``: the config's own
    retention); a disabled checkpoint hook stays disabled."""
    if keep is None:
        return
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = {}
    hooks = cfg.default_hooks
    if 'checkpoint' not in hooks:  # mmengine's default: every epoch
        hooks['checkpoint'] = dict(type='CheckpointHook', interval=1)
    if hooks['checkpoint'] is not None:
        hooks['checkpoint']['max_keep_ckpts'] = int(keep)


def kept_checkpoints(cfg) -> Optional[int]:
    """How many checkpoint files a finished run keeps (None when it cannot be told)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint', dict(interval=1))
    if hook is None:
        return 0
    train = cfg.get('train_cfg') or {}
    length = train.get('max_epochs') if hook.get('by_epoch', True) else train.get('max_iters')
    interval = hook.get('interval', -1)
    keep = hook.get('max_keep_ckpts', -1)
    save_last = hook.get('save_last', True)
    if isinstance(length, int) and interval > 0:
        saves = length // interval + int(bool(save_last and length % interval))
    elif keep > 0:
        saves = keep
    else:
        return None
    kept = min(saves, keep) if keep > 0 else saves
    best = hook.get('save_best')
    best = len(best) if isinstance(best, (list, tuple)) else int(bool(best))
    validates = bool(cfg.get('val_dataloader') and cfg.get('val_cfg') is not None)
    return kept + best * validates


@dataclass
class VariantPlan:
    """One (task, variant) of a plan: its ``runs`` (seeds) and what each needs."""
    task: str
    variant: str
    runs: int
    batch: Dict[str, Any] = field(default_factory=dict)
    epochs: Optional[int] = None
    checkpoints: Optional[int] = None
    resources: Dict[str, Any] = field(default_factory=dict)
    preset: str = ''

    @property
    def gpu_hours(self) -> Optional[float]:
        rate = self.resources.get('gpu_hours_per_epoch')
        return self.runs * self.epochs * rate if rate and self.epochs else None

    @property
    def disk_gb(self) -> Optional[float]:
        gb = self.resources.get('checkpoint_gb')
        return self.runs * self.checkpoints * gb if gb and self.checkpoints is not None else None


def plan_variant(spec, variant: str, task: str, processes: int, policy: str,
                 keep: Optional[int], extra_options: Optional[dict] = None) -> VariantPlan:
    """The batch, epochs and kept checkpoints of ``variant``'s runs; raises :class:`BatchError`
    (other config errors are left to the run, which records them)."""
    import os.path as osp

    from .spec import build_run_config
    plan = VariantPlan(task, variant, len(spec.seeds), resources=dict(spec.resources),
                       preset=osp.basename(spec.path))
    try:
        cfg = build_run_config(spec, spec.variant(variant), spec.seeds[0], extra_options,
                               add_memory_hook=False)
    except Exception:  # the run records it as a failed run
        return plan
    try:
        plan.batch = fit_batch(cfg, processes, policy)
    except BatchError as exc:
        raise BatchError(f"{'/'.join(p for p in (task, variant) if p)}: {exc}") from None
    bound_checkpoints(cfg, keep)
    epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    plan.epochs = epochs if isinstance(epochs, int) else None
    plan.checkpoints = kept_checkpoints(cfg)
    return plan


def _group(plans: Sequence[VariantPlan]) -> Dict[str, List[VariantPlan]]:
    out: Dict[str, List[VariantPlan]] = {}
    for p in plans:
        out.setdefault(p.task, []).append(p)
    return out


def estimate_lines(plans: Sequence[VariantPlan], jobs: int, processes: int,
                   keep: Optional[int]) -> List[str]:
    """The plan's GPU-hours and checkpoint disk, per task and in total, with their source."""
    if not any(p.resources for p in plans):
        return ['estimate: GPU-hours and disk not estimated (no benchmark.resources in '
                f"{', '.join(sorted({p.preset for p in plans}))})"]
    kept = f'the last {keep}' if keep is not None else "the preset's own number of"
    lines = [f'estimate: GPU-hours = runs x epochs x benchmark.resources.gpu_hours_per_epoch; '
             f'disk = runs x kept checkpoints ({kept} (--keep-checkpoints) + best where the preset '
             'saves one) x benchmark.resources.checkpoint_gb; source: each preset\'s '
             'benchmark.resources']
    hours, disk, unknown = 0.0, 0.0, []
    for task, group in _group(plans).items():
        name = task or group[0].preset
        runs = sum(p.runs for p in group)
        h = [p.gpu_hours for p in group]
        d = [p.disk_gb for p in group]
        if any(x is None for x in h + d):
            unknown.append(name)
            lines.append(f'  {name}: {runs} runs, GPU-hours and disk unknown (no complete '
                         f'benchmark.resources in {group[0].preset})')
            continue
        hours, disk = hours + sum(h), disk + sum(d)
        epochs = list(dict.fromkeys(p.epochs for p in group))  # in variant order
        ckpts = list(dict.fromkeys(p.checkpoints for p in group))
        res = group[0].resources
        lines.append(f"  {name}: {runs} runs x {'/'.join(map(str, epochs))} epochs x "
                     f"{res['gpu_hours_per_epoch']:g} GPU-h = {sum(h):,.1f} GPU-hours; "
                     f"{runs} x {'/'.join(map(str, ckpts))} checkpoints x "
                     f"{res['checkpoint_gb']:g} GB = {sum(d):,.1f} GB")
        if res.get('source'):
            lines.append(f"    source: {res['source']}")
    gpus = jobs * processes
    lines.append(f'  total: {hours:,.1f} GPU-hours (about {hours / gpus:,.1f} h on {jobs} x '
                 f'{processes} GPUs), {disk:,.1f} GB of checkpoints'
                 + (f"; not counted: {', '.join(unknown)}" if unknown else ''))
    return lines
