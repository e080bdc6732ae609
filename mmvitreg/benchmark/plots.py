"""Benchmark plots (matplotlib, Agg backend; no display needed).

* ``metrics.png``: one panel per metric, a bar per variant at the mean over seeds with the sample
  standard deviation as error bar, each seed as a dot, the baseline mean as a dashed line.
* ``curves.png``: training loss over iterations (moving average, mean over seeds) and the primary
  validation metric over validation steps, one colour per variant, overlaid.
"""
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['plot_metrics', 'plot_curves', 'smooth', 'mean_curve']

Curve = Tuple[Sequence[float], Sequence[float]]


def _plt():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def smooth(values: Sequence[float], window: int) -> List[float]:
    """Trailing moving average over at most ``window`` values (same length as the input)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Mean over seeds at the steps all curves share (a seed that stopped early shortens it)."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return [], []
    common = set(curves[0][0])
    for steps, _ in curves[1:]:
        common &= set(steps)
    steps = sorted(common)
    maps = [dict(zip(s, v)) for s, v in curves]
    return steps, [sum(m[s] for m in maps) / len(maps) for s in steps]


def _colors(n: int):
    plt = _plt()
    cmap = plt.get_cmap('tab10' if n <= 10 else 'tab20')
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)



def _save(fig, out_file: str, title: Optional[str]) -> str:
    """Add the figure title, write the PNG and free the figure."""
    import matplotlib.pyplot as plt
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)
    return out_file

def plot_metrics(summary: Sequence[dict], runs: Sequence[dict], metrics: Sequence[str],
                 out_file: str, baseline: Optional[str] = None, title: str = '') -> str:
    """Bar chart of every metric per variant with error bars; returns ``out_file``."""
    plt = _plt()
    names = [row['variant'] for row in summary]
    colors = _colors(len(names))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 0.9 * len(names) + 2) *
                                                        len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        means = [row[f'{m}/mean'] for row in summary]
        stds = [row[f'{m}/std'] if _finite(row[f'{m}/std']) else 0.0 for row in summary]
        xs = list(range(len(names)))
        ax.bar(xs, [v if _finite(v) else 0.0 for v in means], yerr=stds, capsize=4,
               color=colors, alpha=0.75, edgecolor='black', linewidth=0.5)
        for x, name in zip(xs, names):
            vals = [(r.get('metrics') or {}).get(m) for r in runs
                    if r.get('variant') == name and r.get('status') == 'ok']
            vals = [v for v in vals if _finite(v)]
            ax.scatter([x] * len(vals), vals, color='black', s=12, zorder=3)
            if not vals:
                ax.text(x, 0.03, 'failed' if any(r.get('variant') == name for r in runs)
                        else 'not run', ha='center', va='bottom', rotation=90, fontsize=8,
                        transform=ax.get_xaxis_transform())
        finite = [v for v in means if _finite(v)]
        if finite:
            lo = min(v - s for v, s in zip(means, stds) if _finite(v))
            hi = max(v + s for v, s in zip(means, stds) if _finite(v))
            pad = max((hi - lo) * 0.5, abs(hi) * 0.02, 1e-3)
            ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
            ax.ticklabel_format(axis='y', useOffset=False, style='plain')
        base = next((row for row in summary if row['variant'] == baseline), None)
        if base is not None and _finite(base[f'{m}/mean']):
            ax.axhline(base[f'{m}/mean'], color='gray', linestyle='--', linewidth=1,
                       label=f'{baseline} mean')
            ax.legend(loc='best', fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=30, ha='right')
        ax.set_ylabel(m)
        ax.set_title(f'{m} (mean ± std over seeds)', fontsize=10)
        ax.grid(axis='y', alpha=0.3)
    return _save(fig, out_file, title)


def plot_curves(curves: Dict[str, Dict[str, List[Curve]]], out_file: str, metric: str,
                title: str = '', smooth_window: int = 10) -> str:
    """Overlay training-loss and validation-``metric`` curves of every variant.

    Args:
        curves: ``{variant: {'loss': [(steps, values) per seed], 'val': [...]}}``.
    """
    plt = _plt()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = _colors(len(curves))
    for color, (name, c) in zip(colors, curves.items()):
        for seed_curve in c.get('loss', []):
            if len(seed_curve[0]):
                ax_loss.plot(seed_curve[0], smooth(list(seed_curve[1]), smooth_window),
                             color=color, alpha=0.25, linewidth=0.8)
        steps, vals = mean_curve(c.get('loss', []))
        if steps:
            ax_loss.plot(steps, smooth(vals, smooth_window), color=color, label=name)
        for seed_curve in c.get('val', []):
            if len(seed_curve[0]):
                ax_val.plot(seed_curve[0], seed_curve[1], color=color, alpha=0.25,
                            linewidth=0.8, marker='.', markersize=3)
        steps, vals = mean_curve(c.get('val', []))
        if steps:
            ax_val.plot(steps, vals, color=color, label=name, marker='o', markersize=3)
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel(f'training loss, total (moving average of {smooth_window} log points)')
    ax_loss.set_title('training loss (mean over seeds; thin: seeds)', fontsize=10)
    ax_val.set_xlabel('validation step (epoch, or iteration for iteration-based schedules)')
    ax_val.set_ylabel(metric)
    ax_val.set_title(f'validation {metric}', fontsize=10)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, out_file, title)


def default_plot_paths(work_dir: str) -> Dict[str, str]:
    return dict(metrics=osp.join(work_dir, 'metrics.png'), curves=osp.join(work_dir, 'curves.png'))
