"""Aggregate per-run results into the benchmark table, CSV and JSON.

A *run result* is a dict as written to ``RUN/result.json`` by the runner::

    dict(variant='dropkey', seed=0, status='ok' | 'failed', metrics={'accuracy/top1': 91.2},
         wall_s=63.1, peak_rss_mb=812.0, peak_cuda_mb=None, error='', work_dir='...')

:func:`summarize` gives one row per variant with, for every metric ``m``: ``m/n``, ``m/mean``,
``m/std``, ``m/ci_low``, ``m/ci_high`` (t-based 95 % CI of the mean) and, against the variant's
baseline, the *paired* statistics of :mod:`.stats`: ``m/n_pairs``, ``m/delta`` (mean paired
difference), ``m/delta_ci_low``, ``m/delta_ci_high``, ``m/p_value`` (paired t-test),
``m/prob_improvement``, ``m/significant``, ``m/sig`` (``*``, ``**``, ``n.s.``) and
``m/rel_gain_pct`` (100 * delta / |baseline mean over the same seeds|). Plus mean wall time,
the largest peak memory and the errors of failed runs. The CSV and JSON carry the same numbers
as the markdown table.
"""
import csv
import io
import math
from typing import Dict, Iterable, List, Optional, Sequence

from . import stats

__all__ = ['summarize', 'summary_columns', 'run_columns', 'to_csv', 'to_markdown',
           'format_mean_std', 'stats_note']

NAN = float('nan')
_PAIRED = ('n_pairs', 'delta', 'delta_ci_low', 'delta_ci_high', 'p_value', 'prob_improvement',
           'significant', 'sig', 'rel_gain_pct')


def _finite(x) -> bool:
    return stats._finite(x)


def summarize(results: Iterable[dict], variants: Sequence[str], metrics: Sequence[str],
              baseline: Optional[str] = None,
              baselines: Optional[Dict[str, Optional[str]]] = None,
              higher_is_better: bool = True, alpha: float = 0.05) -> List[dict]:
    """One summary row per variant (in the order of ``variants``); each variant is compared
    with ``baselines[variant]`` when given, else with ``baseline`` (see the module doc)."""
    results = list(results)
    by_variant: Dict[str, List[dict]] = {v: [] for v in variants}
    for res in results:
        if res.get('variant') in by_variant:
            by_variant[res['variant']].append(res)
    rows = []
    for name in variants:
        runs = sorted(by_variant[name], key=lambda r: r.get('seed', 0))
        ok = [r for r in runs if r.get('status') == 'ok']
        row = dict(variant=name, runs_ok=len(ok), runs_total=len(runs),
                   seeds=' '.join(str(r.get('seed')) for r in ok))
        for m in metrics:
            desc = stats.describe(stats.by_seed(runs, name, m).values())
            for key, value in desc.items():
                row[f'{m}/{key}'] = value
        walls = [r['wall_s'] for r in ok if _finite(r.get('wall_s'))]
        row['wall_s'] = sum(walls) / len(walls) if walls else NAN
        for key in ('peak_rss_mb', 'peak_cuda_mb'):
            vals = [r[key] for r in runs if _finite(r.get(key))]
            row[key] = max(vals) if vals else NAN
        failed = [r for r in runs if r.get('status') != 'ok']
        row['status'] = ('not run' if not runs else 'failed' if not ok else
                         'partial' if failed else 'ok')
        by_error: Dict[str, List[str]] = {}
        for r in failed:
            by_error.setdefault(r.get('error') or r.get('status', 'failed'), []).append(
                str(r.get('seed')))
        row['errors'] = '; '.join(f"seed{'s' if len(s) > 1 else ''} {' '.join(s)}: {e}"
                                  for e, s in by_error.items())
        rows.append(row)
    names = set(variants)
    for row in rows:
        ref = (baselines or {}).get(row['variant']) or baseline
        row['baseline'] = ref if ref in names else ''
        for m in metrics:
            for key in _PAIRED:
                row[f'{m}/{key}'] = NAN
            row[f'{m}/sig'] = ''
            row[f'{m}/significant'] = False
            if not row['baseline'] or row['baseline'] == row['variant']:
                continue
            mine = stats.by_seed(by_variant[row['variant']], row['variant'], m)
            base = stats.by_seed(by_variant[row['baseline']], row['baseline'], m)
            cmp = stats.paired_comparison(mine, base, higher_is_better, alpha=alpha)
            row[f'{m}/n_pairs'] = cmp['n']
            if not cmp['n']:
                continue
            row[f'{m}/delta'] = cmp['delta']
            row[f'{m}/delta_ci_low'], row[f'{m}/delta_ci_high'] = cmp['ci_low'], cmp['ci_high']
            row[f'{m}/p_value'] = cmp['p_value']
            row[f'{m}/prob_improvement'] = cmp['prob_improvement']
            row[f'{m}/significant'] = cmp['significant']
            row[f'{m}/sig'] = stats.significance_label(cmp['p_value'], alpha)
            ref_mean = sum(base[s] for s in cmp['seeds']) / cmp['n']
            row[f'{m}/rel_gain_pct'] = 100.0 * cmp['delta'] / abs(ref_mean) if ref_mean else NAN
    return rows


def summary_columns(metrics: Sequence[str]) -> List[str]:
    cols = ['variant', 'status', 'runs_ok', 'runs_total', 'seeds', 'baseline']
    for m in metrics:
        cols += [f'{m}/{k}' for k in ('n', 'mean', 'std', 'ci_low', 'ci_high') + _PAIRED]
    return cols + ['wall_s', 'peak_rss_mb', 'peak_cuda_mb', 'errors']


def run_columns(metrics: Sequence[str]) -> List[str]:
    return ['variant', 'seed', 'status'] + list(metrics) + [
        'wall_s', 'peak_rss_mb', 'peak_cuda_mb', 'error', 'work_dir']


def _csv_value(value) -> str:
    if value is None:
        return ''
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return '' if not math.isfinite(value) else repr(round(value, 6))
    return str(value)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV text (header + rows); NaN/None become empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return buf.getvalue()


def _digits(values: Iterable[float]) -> int:
    """3 decimals for metrics in [0, 1] (e.g. COCO mAP), 2 for percentages."""
    vals = [abs(v) for v in values if _finite(v)]
    return 3 if vals and max(vals) <= 1.0 else 2


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    if not _finite(mean):
        return '-'
    if not _finite(std):
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _ci(lo: float, hi: float, digits: int, signed: bool = False) -> str:
    if not (_finite(lo) and _finite(hi)):
        return '-'
    f = '+' if signed else ''
    return f'[{lo:{f}.{digits}f}, {hi:{f}.{digits}f}]'


def _p(p: float) -> str:
    if not _finite(p):
        return '-'
    return '<0.001' if p < 0.001 else f'{p:.3f}'


def _md_table(header: List[str], body: List[List[str]], align: str) -> str:
    esc = [[str(c).replace('|', '\\|').replace('\n', ' ') for c in row] for row in body]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(':---' if a == 'l' else '---:' for a in align) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in esc])


def stats_note(n_text: str, alpha: float = 0.05) -> str:
    return (f'{n_text}. Runs are paired by seed (same seed: same data order and, where the '
            'variant allows, the same initialisation). Mean ± sample std; 95 % CIs are t-based; '
            'Δ is the mean paired difference to the baseline with its 95 % CI; p is the two-sided '
            'paired t-test (scipy.stats.ttest_rel); P(improve) is the share of seeds on which the '
            f'variant beats the baseline (ties 1/2). * p < {alpha:g}, ** p < {alpha / 5:g}, '
            'n.s. not significant; no correction for multiple comparisons.')


def _n_text(summary: Sequence[dict], metric: str) -> str:
    ns = sorted({int(r[f'{metric}/n']) for r in summary if r[f'{metric}/n']})
    if not ns:
        return 'n = 0 successful runs'
    n = str(ns[0]) if len(ns) == 1 else f'{ns[0]}-{ns[-1]}'
    none = [r['variant'] for r in summary if r['runs_total'] and not r[f'{metric}/n']]
    return f'n = {n} seed{"s" if ns[-1] != 1 else ""} per variant' + (
        f' ({", ".join(none)}: no successful run)' if none else '')


def to_markdown(summary: Sequence[dict], runs: Sequence[dict], metrics: Sequence[str],
                baseline: Optional[str] = None, title: Optional[str] = None,
                notes: Sequence[str] = (), alpha: float = 0.05) -> str:
    """The report: the paired-statistics table of the primary metric, one table per further
    metric, the statistics note (with n) and a per-run table."""
    digits = {m: _digits([r.get(f'{m}/mean') for r in summary] +
                         [(r.get('metrics') or {}).get(m) for r in runs]) for m in metrics}
    out = [f'## {title}\n'] if title else []
    refs = {row.get('baseline') for row in summary if row.get('baseline')}
    several = len(refs) > 1
    for i, m in enumerate(metrics):
        d = digits[m]
        vs = f'vs {baseline}' if baseline and not several else 'vs baseline'
        header = ['variant', 'n'] + (['baseline'] if several else []) + [
            f'{m} mean ± std', '95% CI', f'Δ {vs} (paired)', '95% CI of Δ', 'p', 'P(improve)',
            'sig.']
        align = 'lr' + ('l' if several else '') + 'rrrrrrl'
        if i == 0:
            header += ['time/run (s)', 'peak RSS (MB)', 'peak CUDA (MB)', 'status']
            align += 'rrrl'
        body = []
        for row in summary:
            cells = [row['variant'], f"{row[f'{m}/n']}/{row['runs_total']}"]
            if several:
                cells.append(row.get('baseline') or '-')
            cells += [format_mean_std(row[f'{m}/mean'], row[f'{m}/std'], d),
                      _ci(row[f'{m}/ci_low'], row[f'{m}/ci_high'], d)]
            if row['variant'] == row.get('baseline'):
                cells += ['(baseline)', '', '', '', '']
            else:
                delta = row[f'{m}/delta']
                cells += [f'{delta:+.{d}f}' if _finite(delta) else '-',
                          _ci(row[f'{m}/delta_ci_low'], row[f'{m}/delta_ci_high'], d, True),
                          _p(row[f'{m}/p_value']),
                          f"{row[f'{m}/prob_improvement']:.2f}"
                          if _finite(row[f'{m}/prob_improvement']) else '-',
                          row[f'{m}/sig'] or '-']
            if i == 0:
                for key in ('wall_s', 'peak_rss_mb', 'peak_cuda_mb'):
                    cells.append(f'{row[key]:.0f}' if _finite(row[key]) else '-')
                cells.append(row['status'] + (': ' + row['errors'] if row.get('errors') else ''))
            body.append(cells)
        out += ([''] if i else []) + [_md_table(header, body, align)]
    out += ['', stats_note(_n_text(summary, metrics[0]), alpha)]
    out += [''] + list(notes) if notes else []
    header = ['variant', 'seed', 'status'] + list(metrics) + ['time (s)', 'peak RSS (MB)',
                                                              'peak CUDA (MB)', 'error']
    body = []
    for r in runs:
        cells = [r['variant'], str(r.get('seed')), r.get('status', '?')]
        for m in metrics:
            v = (r.get('metrics') or {}).get(m)
            cells.append(f'{v:.{digits[m]}f}' if _finite(v) else '-')
        for key in ('wall_s', 'peak_rss_mb', 'peak_cuda_mb'):
            v = r.get(key)
            cells.append(f'{v:.0f}' if _finite(v) else '-')
        cells.append(r.get('error') or '')
        body.append(cells)
    out += ['', 'Per-run results:', '',
            _md_table(header, body, 'lrl' + 'r' * len(metrics) + 'rrrl')]
    return '\n'.join(out) + '\n'
