"""Aggregate per-run results into the benchmark table (pure functions, std lib only).

A *run result* is a dict as written to ``RUN/result.json`` by the runner::

    dict(variant='dropkey', seed=0, status='ok' | 'failed', metrics={'accuracy/top1': 91.2},
         wall_s=63.1, peak_rss_mb=812.0, peak_cuda_mb=None, error='', work_dir='...')

:func:`summarize` gives one row per variant: mean and sample standard deviation (n-1) over the
successful seeds of every metric, the difference to the baseline mean (absolute and relative),
mean wall time, the largest peak memory, and the errors of failed runs.
"""
import csv
import io
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ['mean_std', 'summarize', 'summary_columns', 'run_columns', 'to_csv', 'to_markdown',
           'format_mean_std']

NAN = float('nan')


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is NaN for fewer than two values and
    both are NaN for none."""
    vals = [float(v) for v in values]
    if not vals:
        return NAN, NAN
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, NAN
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def _finite(x: Optional[float]) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def summarize(results: Iterable[dict], variants: Sequence[str], metrics: Sequence[str],
              baseline: Optional[str] = None,
              baselines: Optional[Dict[str, Optional[str]]] = None) -> List[dict]:
    """One summary row per variant (in the order of ``variants``).

    Each variant is compared with ``baselines[variant]`` when given, else with ``baseline``.

    Row keys: ``variant``, ``runs_ok``, ``runs_total``, ``seeds`` (successful seeds), for every
    metric ``m``: ``m/mean``, ``m/std``, ``m/n``, ``m/delta`` (mean - baseline mean) and
    ``m/rel_gain_pct`` (100 * delta / |baseline mean|); ``wall_s`` (mean over successful runs),
    ``peak_rss_mb`` and ``peak_cuda_mb`` (max), ``status`` and ``errors``.
    """
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
            vals = [r['metrics'][m] for r in ok if _finite((r.get('metrics') or {}).get(m))]
            mean, std = mean_std(vals)
            row[f'{m}/mean'], row[f'{m}/std'], row[f'{m}/n'] = mean, std, len(vals)
        walls = [r['wall_s'] for r in ok if _finite(r.get('wall_s'))]
        row['wall_s'] = mean_std(walls)[0]
        for key in ('peak_rss_mb', 'peak_cuda_mb'):
            vals = [r[key] for r in runs if _finite(r.get(key))]
            row[key] = max(vals) if vals else NAN
        failed = [r for r in runs if r.get('status') != 'ok']
        if not runs:
            row['status'] = 'not run'
        elif failed and not ok:
            row['status'] = 'failed'
        elif failed:
            row['status'] = 'partial'
        else:
            row['status'] = 'ok'
        by_error: Dict[str, List[str]] = {}
        for r in failed:
            by_error.setdefault(r.get('error') or r.get('status', 'failed'), []).append(
                str(r.get('seed')))
        row['errors'] = '; '.join(f"seed{'s' if len(s) > 1 else ''} {' '.join(s)}: {e}"
                                  for e, s in by_error.items())
        rows.append(row)
    by_name = {r['variant']: r for r in rows}
    for row in rows:
        ref_name = (baselines or {}).get(row['variant']) or baseline
        base = by_name.get(ref_name)
        row['baseline'] = ref_name if base is not None else ''
        for m in metrics:
            ref = base[f'{m}/mean'] if base is not None else NAN
            mean = row[f'{m}/mean']
            if _finite(ref) and _finite(mean):
                delta = mean - ref
                row[f'{m}/delta'] = delta
                row[f'{m}/rel_gain_pct'] = 100.0 * delta / abs(ref) if ref != 0 else NAN
            else:
                row[f'{m}/delta'] = NAN
                row[f'{m}/rel_gain_pct'] = NAN
    return rows


def summary_columns(metrics: Sequence[str]) -> List[str]:
    cols = ['variant', 'status', 'runs_ok', 'runs_total', 'seeds', 'baseline']
    for m in metrics:
        cols += [f'{m}/mean', f'{m}/std', f'{m}/n', f'{m}/delta', f'{m}/rel_gain_pct']
    return cols + ['wall_s', 'peak_rss_mb', 'peak_cuda_mb', 'errors']


def run_columns(metrics: Sequence[str]) -> List[str]:
    return ['variant', 'seed', 'status'] + list(metrics) + [
        'wall_s', 'peak_rss_mb', 'peak_cuda_mb', 'error', 'work_dir']


def _csv_value(value) -> str:
    if value is None:
        return ''
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


def _signed(x: float, digits: int, suffix: str = '') -> str:
    return f'{x:+.{digits}f}{suffix}' if _finite(x) else '-'


def _md_escape(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _md_table(header: List[str], body: List[List[str]], align: List[str]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(':---' if a == 'l' else '---:' for a in align) + '|']
    lines += ['| ' + ' | '.join(_md_escape(c) for c in row) + ' |' for row in body]
    return '\n'.join(lines)


def to_markdown(summary: Sequence[dict], runs: Sequence[dict], metrics: Sequence[str],
                baseline: Optional[str] = None, title: Optional[str] = None,
                notes: Sequence[str] = ()) -> str:
    """The results report: a summary table (mean ± std over seeds, gain vs baseline, time,
    memory, status) followed by a per-run table."""
    digits = {m: _digits([r.get(f'{m}/mean') for r in summary] +
                         [(r.get('metrics') or {}).get(m) for r in runs]) for m in metrics}
    out = []
    if title:
        out.append(f'## {title}\n')
    refs = {row.get('baseline') for row in summary if row.get('baseline')}
    several = len(refs) > 1  # per-variant baselines: show each row's reference
    header = ['variant', 'runs'] + (['baseline'] if several else [])
    align = ['l', 'r'] + (['l'] if several else [])
    for m in metrics:
        header += [f'{m} (mean ± std)',
                   f'Δ {m} vs {baseline}' if baseline and not several else f'Δ {m}']
        align += ['r', 'r']
    header += ['time/run (s)', 'peak RSS (MB)', 'peak CUDA (MB)', 'status']
    align += ['r', 'r', 'r', 'l']
    body = []
    for row in summary:
        cells = [row['variant'], f"{row['runs_ok']}/{row['runs_total']}"]
        if several:
            cells.append(row.get('baseline') or '-')
        for m in metrics:
            d = digits[m]
            cells.append(format_mean_std(row[f'{m}/mean'], row[f'{m}/std'], d))
            if row['variant'] == row.get('baseline', baseline):
                cells.append('(baseline)')
            else:
                delta = row[f'{m}/delta']
                rel = row[f'{m}/rel_gain_pct']
                cells.append('-' if not _finite(delta) else
                             f'{_signed(delta, d)} ({_signed(rel, 1, "%")})')
        cells.append(f"{row['wall_s']:.0f}" if _finite(row['wall_s']) else '-')
        cells.append(f"{row['peak_rss_mb']:.0f}" if _finite(row['peak_rss_mb']) else '-')
        cells.append(f"{row['peak_cuda_mb']:.0f}" if _finite(row['peak_cuda_mb']) else '-')
        status = row['status']
        if row.get('errors'):
            status += ': ' + row['errors']
        cells.append(status)
        body.append(cells)
    out.append(_md_table(header, body, align))
    if notes:
        out.append('')
        out += [f'{n}' for n in notes]
    header = ['variant', 'seed', 'status'] + list(metrics) + ['time (s)', 'peak RSS (MB)',
                                                              'peak CUDA (MB)', 'error']
    align = ['l', 'r', 'l'] + ['r'] * len(metrics) + ['r', 'r', 'r', 'l']
    body = []
    for r in runs:
        cells = [r['variant'], str(r.get('seed')), r.get('status', '?')]
        for m in metrics:
            v = (r.get('metrics') or {}).get(m)
            cells.append(f'{v:.{digits[m]}f}' if _finite(v) else '-')
        for key, fmt in (('wall_s', '{:.0f}'), ('peak_rss_mb', '{:.0f}'),
                         ('peak_cuda_mb', '{:.0f}')):
            v = r.get(key)
            cells.append(fmt.format(v) if _finite(v) else '-')
        cells.append(r.get('error') or '')
        body.append(cells)
    out += ['', 'Per-run results:', '', _md_table(header, body, align)]
    return '\n'.join(out) + '\n'
