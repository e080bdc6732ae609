"""Benchmark plots (matplotlib, Agg backend; no display needed).

* ``forest.png``: per metric, one row per variant: the mean paired difference to the baseline
  with its 95 % CI, a zero line, and n / Holm-adjusted p / significance next to each row.
* ``metrics.png``: per metric, a bar per variant at the mean with the 95 % CI as error bar and
  every seed as a dot; the axis starts at 0 for non-negative metrics (differences are read from
  the forest plot, not from bar heights); n under each bar.
* ``curves.png``: training loss and the primary validation metric per variant over integer
  epochs (or iterations): the mean over seeds with a band from the lowest to the highest seed.
* :func:`plot_suite`: the cross-task forest plot (one panel per task, plus the aggregate
  probability of improvement).
"""
from typing import Dict, List, Sequence, Tuple

from .stats import _finite

__all__ = ['plot_forest', 'plot_metrics', 'plot_curves', 'plot_suite', 'band']

Curve = Tuple[Sequence[float], Sequence[float]]


def _plt():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def _colors(n: int):
    cmap = _plt().get_cmap('tab10' if n <= 10 else 'tab20')
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, out_file: str, title: str) -> str:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    _plt().close(fig)
    return out_file


def _forest_panel(ax, labels: List[str], deltas, lows, highs, notes: List[str], xlabel: str):
    ys = list(range(len(labels)))[::-1]
    for y, d, lo, hi in zip(ys, deltas, lows, highs):
        if _finite(lo) and _finite(hi):
            ax.plot([lo, hi], [y, y], color='black', linewidth=1.5)
        if _finite(d):
            ax.plot([d], [y], 'o', color='tab:blue' if not (_finite(lo) and lo <= 0 <= hi)
                    else 'gray', markersize=6)
    ax.axvline(0.0, color='tab:red', linewidth=1, linestyle='--')
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis='x', alpha=0.3)
    finite = [v for v in list(lows) + list(highs) + list(deltas) if _finite(v)] + [0.0]
    span = max(finite) - min(finite) or 1.0
    ax.set_xlim(min(finite) - 0.08 * span, max(finite) + 0.45 * span)
    for y, note in zip(ys, notes):
        ax.text(1.0, y, ' ' + note, transform=ax.get_yaxis_transform(), va='center',
                ha='right', fontsize=8)


def plot_forest(summary: Sequence[dict], metrics: Sequence[str], out_file: str,
                title: str = '') -> str:
    """Paired differences vs the baseline with 95 % CIs (see the module doc)."""
    plt = _plt()
    rows = [r for r in summary if r.get('baseline') and r['variant'] != r['baseline']]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics),
                                                       1.2 + 0.45 * max(1, len(rows))),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        notes = []
        for r in rows:
            p = r.get(f'{m}/p_holm')
            notes.append(f"n={r[f'{m}/n_pairs']:.0f}" if _finite(r[f'{m}/n_pairs']) else 'n=0')
            if _finite(p):
                notes[-1] += f", p(Holm)={p:.3f} {r[f'{m}/sig']}" if p >= 0.001 else \
                    f", p(Holm)<0.001 {r[f'{m}/sig']}"
        several = len({r['baseline'] for r in rows}) > 1
        labels = [r['variant'] + (f" vs {r['baseline']}" if several else '') for r in rows]
        _forest_panel(ax, labels, [r[f'{m}/delta'] for r in rows],
                      [r[f'{m}/delta_ci_low'] for r in rows],
                      [r[f'{m}/delta_ci_high'] for r in rows], notes,
                      f'Δ {m} vs ' + ('baseline' if several or not rows else rows[0]['baseline'])
                      + ' (paired by seed, 95% CI)')
        ax.set_title(f'{m}: paired difference (grey: CI contains 0)', fontsize=10)
    return _save(fig, out_file, title)


def plot_metrics(summary: Sequence[dict], runs: Sequence[dict], metrics: Sequence[str],
                 out_file: str, title: str = '') -> str:
    """Bar chart of every metric per variant with 95 % CI error bars (see the module doc)."""
    plt = _plt()
    names = [row['variant'] for row in summary]
    colors = _colors(len(names))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 0.9 * len(names) + 2) *
                                                        len(metrics), 4.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        xs = list(range(len(names)))
        means = [row[f'{m}/mean'] if _finite(row[f'{m}/mean']) else 0.0 for row in summary]
        err = [[max(0.0, row[f'{m}/mean'] - row[f'{m}/ci_low']) if _finite(row[f'{m}/ci_low'])
                else 0.0 for row in summary],
               [max(0.0, row[f'{m}/ci_high'] - row[f'{m}/mean']) if _finite(row[f'{m}/ci_high'])
                else 0.0 for row in summary]]
        ax.bar(xs, means, yerr=err, capsize=4, color=colors, alpha=0.7, edgecolor='black',
               linewidth=0.5)
        values = []
        for x, name in zip(xs, names):
            vals = [(r.get('metrics') or {}).get(m) for r in runs
                    if r.get('variant') == name and r.get('status') == 'ok']
            vals = [v for v in vals if _finite(v)]
            values += vals
            ax.scatter([x] * len(vals), vals, color='black', s=10, zorder=3)
        top = max([v + e for v, e in zip(means, err[1])] + values + [1e-9])
        if values and min(values) < 0:  # a signed metric: show its whole range
            ax.set_ylim(min([v - e for v, e in zip(means, err[0])] + values) * 1.05, top * 1.08)
        else:  # a non-negative metric: from 0 (a CI reaching below 0 is cut at the axis)
            ax.set_ylim(0.0, top * 1.08)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{n}\n(n={row[f'{m}/n']})" for n, row in zip(names, summary)],
                           rotation=30, ha='right', fontsize=8)
        ax.set_ylabel(m)
        ax.set_title(f'{m}: mean, 95% CI, seeds (axis from 0)', fontsize=10)
        ax.grid(axis='y', alpha=0.3)
    return _save(fig, out_file, title)


def band(curves: Sequence[Curve]) -> Tuple[List[float], List[float], List[float], List[float]]:
    """``(x, mean, low, high)`` over seeds at the x values all seeds share."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return [], [], [], []
    common = set(curves[0][0])
    for xs, _ in curves[1:]:
        common &= set(xs)
    xs = sorted(common)
    maps = [dict(zip(x, y)) for x, y in curves]
    vals = [[mp[x] for mp in maps] for x in xs]
    return xs, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def plot_curves(curves: Dict[str, dict], out_file: str, metric: str, title: str = '') -> str:
    """Training loss and validation ``metric`` per variant: mean over seeds and a min-max band.

    Args:
        curves: ``{variant: {'loss': [(x, y) per seed], 'val': [...], 'unit': 'epoch'}}``.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4.4))
    unit = next((c.get('unit') for c in curves.values() if c.get('unit')), 'epoch')
    for color, (name, c) in zip(_colors(len(curves)), curves.items()):
        for ax, key in ((ax_loss, 'loss'), (ax_val, 'val')):
            xs, mean, lo, hi = band(c.get(key, []))
            if not xs:
                continue
            n = sum(1 for s in c.get(key, []) if len(s[0]))
            ax.plot(xs, mean, color=color, label=f'{name} (n={n})', marker='.', markersize=3)
            if n > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    ax_loss.set_ylabel('training loss (mean of the log points per ' + unit + ')'
                       if unit == 'epoch' else 'training loss')
    ax_loss.set_title('training loss: mean over seeds, band = min..max', fontsize=10)
    ax_val.set_ylabel(metric)
    ax_val.set_title(f'validation {metric}: mean over seeds, band = min..max', fontsize=10)
    for ax in (ax_loss, ax_val):
        ax.set_xlabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, out_file, title)


def plot_suite(table: Sequence[dict], tasks: Sequence[str], out_file: str,
               title: str = '') -> str:
    """Cross-task forest plot: one panel per task (paired Δ of its primary metric with 95 % CI)
    and one for the aggregate probability of improvement (stratified bootstrap 95 % CI)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1),
                                                         1.4 + 0.45 * max(1, len(table))),
                             squeeze=False)
    labels = [r.get('comparison') or r['variant'] for r in table]
    for ax, task in zip(axes[0], tasks):
        notes = [f"{r.get(f'{task}/sig') or ''}" for r in table]
        _forest_panel(ax, labels, [r.get(f'{task}/delta') for r in table],
                      [r.get(f'{task}/ci_low') for r in table],
                      [r.get(f'{task}/ci_high') for r in table], notes,
                      f"Δ {table[0].get(f'{task}/metric', '') if table else ''}")
        ax.set_title(task, fontsize=10)
    ax = axes[0][-1]
    ys = list(range(len(table)))[::-1]
    for y, r in zip(ys, table):
        if _finite(r.get('pi_ci_low')):
            ax.plot([r['pi_ci_low'], r['pi_ci_high']], [y, y], color='black', linewidth=1.5)
        if _finite(r.get('pi_mean')):
            ax.plot([r['pi_mean']], [y], 'o', color='tab:blue')
    ax.axvline(0.5, color='tab:red', linewidth=1, linestyle='--')
    ax.set_xlim(0, 1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.7, len(table) - 0.3)
    ax.set_xlabel('P(improve): mean over tasks, 95% CI')
    ax.set_title('aggregate (0.5 = no difference)', fontsize=10)
    ax.grid(axis='x', alpha=0.3)
    return _save(fig, out_file, title)
