"""Aggregate per-run results into the benchmark table, CSV and JSON.

A *run result* is a dict as written to ``RUN/result.json`` by the runner::

    dict(variant='dropkey', seed=0, status='ok' | 'failed', metrics={'accuracy/top1': 91.2},
         wall_s=63.1, peak_rss_mb=812.0, peak_cuda_mb=None, error='', work_dir='...')

:func:`summarize` gives one row per variant with, for every metric ``m``: ``m/n``, ``m/mean``,
``m/std``, ``m/ci_low``, ``m/ci_high`` (t-based 95 % CI of the mean), ``m/iqm`` (interquartile
mean) and, against the variant's baseline, the statistics of :mod:`.stats`: ``m/n_pairs``,
``m/delta`` (mean paired difference), ``m/delta_ci_low``, ``m/delta_ci_high``, ``m/p_value``
(raw two-sided p) with ``m/test`` (``t`` or ``exact``: which test gave it), ``m/p_holm`` (Holm's
adjustment over the table's comparisons of ``m``), ``m/prob_improvement`` (pairwise, over all
runs) with ``m/pi_ci_low``/``m/pi_ci_high``, ``m/significant`` (``p_holm < alpha``), ``m/sig``
(``*``, ``**``, ``n.s.``, from ``p_holm``), ``m/mde`` (minimum detectable effect at ``n_pairs``)
and ``m/rel_gain_pct`` (100 * delta / |baseline mean over the same seeds|). Plus mean wall time,
the largest peak memory and the errors of failed runs. The CSV and JSON carry the same numbers
as the markdown table.
"""
import csv
import io
import math
from typing import Dict, Iterable, List, Optional, Sequence

from . import stats

__all__ = ['summarize', 'summary_columns', 'run_columns', 'to_csv', 'to_markdown',
           'format_mean_std', 'stats_note', 'mde_note']

NAN = float('nan')
_PAIRED = ('n_pairs', 'delta', 'delta_ci_low', 'delta_ci_high', 'p_value', 'test', 'p_holm',
           'prob_improvement', 'pi_ci_low', 'pi_ci_high', 'significant', 'sig', 'mde',
           'rel_gain_pct')
_DESCRIBE = ('n', 'mean', 'std', 'ci_low', 'ci_high', 'iqm')


def _finite(x) -> bool:
    return stats._finite(x)


def summarize(results: Iterable[dict], variants: Sequence[str], metrics: Sequence[str],
              baseline: Optional[str] = None,
              baselines: Optional[Dict[str, Optional[str]]] = None,
              higher_is_better: bool = True, alpha: float = 0.05,
              questions: Optional[Dict[str, str]] = None) -> List[dict]:
    """One summary row per variant (in the order of ``variants``); each variant is compared
    with ``baselines[variant]`` when given, else with ``baseline`` (see the module doc);
    ``questions[variant]``: the question that comparison asks (the row's ``question``)."""
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
        asks = row['baseline'] and row['baseline'] != row['variant']
        row['question'] = (questions or {}).get(row['variant'], '') if asks else ''
        for m in metrics:
            for key in _PAIRED:
                row[f'{m}/{key}'] = NAN
            row[f'{m}/sig'] = row[f'{m}/test'] = ''
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
            row[f'{m}/p_value'], row[f'{m}/test'] = cmp['p_value'], cmp['test']
            row[f'{m}/prob_improvement'] = cmp['prob_improvement']
            row[f'{m}/pi_ci_low'], row[f'{m}/pi_ci_high'] = cmp['pi_ci_low'], cmp['pi_ci_high']
            row[f'{m}/mde'] = cmp['mde']
            ref_mean = sum(base[s] for s in cmp['seeds']) / cmp['n']
            row[f'{m}/rel_gain_pct'] = 100.0 * cmp['delta'] / abs(ref_mean) if ref_mean else NAN
    for m in metrics:  # the family: every comparison of this metric in the table (holm_adjust
        # leaves rows without a p out of it)
        for row, adj in zip(rows, stats.holm_adjust([r[f'{m}/p_value'] for r in rows])):
            if _finite(adj):
                row[f'{m}/p_holm'] = adj
                row[f'{m}/significant'] = adj < alpha
        for row in rows:
            if row['baseline'] and row['baseline'] != row['variant'] and row[f'{m}/n_pairs']:
                row[f'{m}/sig'] = stats.significance_label(row[f'{m}/p_holm'], alpha)
    return rows


def summary_columns(metrics: Sequence[str]) -> List[str]:
    cols = ['variant', 'status', 'runs_ok', 'runs_total', 'seeds', 'baseline', 'question']
    for m in metrics:
        cols += [f'{m}/{k}' for k in _DESCRIBE + _PAIRED]
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


EXACT_MARK = '†'


def stats_note(n_text: str, alpha: float = 0.05, comparisons: int = 0,
               reps: int = stats.BOOTSTRAP_REPS) -> str:
    """The table footnote: what every column means and which test gives p."""
    k = f' k = {comparisons}' if comparisons else ''
    return (f'{n_text}. Runs are paired by seed (same seed: same data order and, where the '
            'variant allows, the same initialisation). Mean ± sample std; 95 % CIs are t-based; '
            'IQM is the interquartile mean of the runs (scipy.stats.trim_mean(x, 0.25)). Δ is the '
            'mean paired difference to the baseline with its t-based 95 % CI (none when every '
            'difference is the same: zero variance). p is two-sided: the paired t-test '
            f'(scipy.stats.ttest_rel) from {stats.MIN_PAIRS_TTEST} pairs on when the differences '
            f'vary, else ({EXACT_MARK}) the exact paired permutation test of the mean difference '
            'over all 2^n sign flips (scipy.stats.permutation_test, permutation_type=\'samples\'),'
            ' which is at least 2/2^n and 1 when nothing differs. p (Holm) is Holm\'s (1979) '
            f'step-down family-wise adjustment over the table\'s{k} comparisons of the metric '
            '(each '
            f'variant vs its baseline); * p (Holm) < {alpha:g}, ** p (Holm) < {alpha / 5:g}, '
            'n.s. not significant. P(improve) is the probability that a run of the variant beats '
            'a run of the baseline over all pairs of successful runs (ties 1/2; Mann-Whitney U / '
            '(n m), scipy.stats.mannwhitneyu; Agarwal et al. 2021), with a 95 % percentile '
            f'bootstrap CI (scipy.stats.bootstrap, {reps} resamples of each variant\'s runs, '
            'fixed seed).')


def mde_note(summary: Sequence[dict], metrics: Sequence[str], alpha: float = 0.05,
             power: float = 0.8) -> str:
    """The minimum-detectable-effect line: per metric and compared variant, the smallest true
    Δ the paired t-test (two-sided ``alpha``, before Holm) detects with probability ``power``
    at the comparison's n, given its observed std of the paired differences."""
    parts = []
    for m in metrics:
        rows = [r for r in summary if r.get('baseline') and r['variant'] != r['baseline']
                and r[f'{m}/n_pairs']]
        if not rows:
            continue
        d = _digits([r.get(f'{m}/mean') for r in summary])
        ns = sorted({int(r[f'{m}/n_pairs']) for r in rows})
        n = str(ns[0]) if len(ns) == 1 else f'{ns[0]}-{ns[-1]}'
        parts.append(f'{m} (n = {n} pairs): ' + ', '.join(
            f"{r['variant']} {r[f'{m}/mde']:.{d}f}" if _finite(r[f'{m}/mde'])
            else f"{r['variant']} -" for r in rows))
    if not parts:
        return ''
    return (f'Minimum detectable effect (smallest true |Δ| the paired t-test, two-sided α = '
            f'{alpha:g} before Holm, detects with power {power:g}; exact noncentral t, '
            'scipy.stats.nct, from each comparison\'s observed std of the paired differences; '
            '- where that std is 0 or n < 2): ' + '; '.join(parts) + '.')


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
                notes: Sequence[str] = (), alpha: float = 0.05,
                preamble: Sequence[str] = ()) -> str:
    """The report: ``preamble`` lines (e.g. where the runs ran), the paired-statistics table of
    the primary metric, one table per further metric, the statistics note (with n) and a per-run
    table."""
    digits = {m: _digits([r.get(f'{m}/mean') for r in summary] +
                         [(r.get('metrics') or {}).get(m) for r in runs]) for m in metrics}
    out = [f'## {title}\n'] if title else []
    out += [*preamble, ''] if preamble else []
    refs = {row.get('baseline') for row in summary if row.get('baseline')}
    several = len(refs) > 1
    asks = any(row.get('question') for row in summary)
    for i, m in enumerate(metrics):
        d = digits[m]
        vs = f'vs {baseline}' if baseline and not several else 'vs baseline'
        header = ['variant', 'n'] + (['baseline'] if several else []) + [
            f'{m} mean ± std', '95% CI', 'IQM', f'Δ {vs} (paired)', '95% CI of Δ', 'p',
            'p (Holm)', 'P(improve) [95% CI]', 'sig.']
        align = 'lr' + ('l' if several else '') + 'rrrrrrrrl'
        if i == 0:
            header += ['time/run (s)', 'peak RSS (MB)', 'peak CUDA (MB)', 'status']
            align += 'rrrl'
            if asks:
                header.insert(1, 'question')
                align = align[0] + 'l' + align[1:]
        body = []
        for row in summary:
            ask = row.get('question') or ('' if row['variant'] == row.get('baseline') else '-')
            cells = [row['variant']] + ([ask] if i == 0 and asks else [])
            cells.append(f"{row[f'{m}/n']}/{row['runs_total']}")
            if several:
                cells.append(row.get('baseline') or '-')
            cells += [format_mean_std(row[f'{m}/mean'], row[f'{m}/std'], d),
                      _ci(row[f'{m}/ci_low'], row[f'{m}/ci_high'], d),
                      f"{row[f'{m}/iqm']:.{d}f}" if _finite(row[f'{m}/iqm']) else '-']
            if row['variant'] == row.get('baseline'):
                cells += ['(baseline)', '', '', '', '', '']
            else:
                delta = row[f'{m}/delta']
                exact = row[f'{m}/test'] in ('exact', 'permutation')
                pi = row[f'{m}/prob_improvement']
                cells += [f'{delta:+.{d}f}' if _finite(delta) else '-',
                          _ci(row[f'{m}/delta_ci_low'], row[f'{m}/delta_ci_high'], d, True),
                          _p(row[f'{m}/p_value']) + (EXACT_MARK if exact else ''),
                          _p(row[f'{m}/p_holm']),
                          (f'{pi:.2f}' + (' ' + _ci(row[f'{m}/pi_ci_low'],
                                                    row[f'{m}/pi_ci_high'], 2)
                                          if _finite(row[f'{m}/pi_ci_low']) else ''))
                          if _finite(pi) else '-',
                          row[f'{m}/sig'] or '-']
            if i == 0:
                for key in ('wall_s', 'peak_rss_mb', 'peak_cuda_mb'):
                    cells.append(f'{row[key]:.0f}' if _finite(row[key]) else '-')
                cells.append(row['status'] + (': ' + row['errors'] if row.get('errors') else ''))
            body.append(cells)
        out += ([''] if i else []) + [_md_table(header, body, align)]
    k = max((sum(_finite(r[f'{m}/p_value']) for r in summary) for m in metrics), default=0)
    out += ['', stats_note(_n_text(summary, metrics[0]), alpha, k)]
    mde = mde_note(summary, metrics, alpha)
    out += ['', mde] if mde else []
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
