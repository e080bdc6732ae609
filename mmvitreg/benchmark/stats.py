"""Statistics of a regularizer benchmark: per-variant confidence intervals, paired comparisons
against the baseline, and a cross-task aggregate.

* Runs of two variants with the same seed are *paired*: the same seed gives the same data order
  and, as far as the variant allows (a regularizer that adds parameters shifts the random stream
  after them), the same initialisation. Only seeds present in both variants are compared.
* Per variant: mean, sample standard deviation and a t-based 95 % confidence interval of the mean.
* Against the baseline: mean paired difference with its t-based 95 % CI, the two-sided p-value of
  the paired t-test (``scipy.stats.ttest_rel``) and the probability of improvement, the share of
  pairs in which the variant beats the baseline (ties count one half), following Agarwal et al.,
  "Deep RL at the edge of the statistical precipice", NeurIPS 2021.
* Across tasks: the mean probability of improvement with a stratified bootstrap CI (pairs are
  resampled with replacement *within* each task, the per-task values are averaged).

No correction for multiple comparisons is applied; the report says so.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as _st

__all__ = ['describe', 'paired_comparison', 'probability_of_improvement',
           'stratified_bootstrap_pi', 'significance_label', 'by_seed']

NAN = float('nan')


def describe(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """``n``, ``mean``, ``std`` (ddof 1) and the t-based CI of the mean (``ci_low``, ``ci_high``);
    NaN where undefined (std and CI need two values)."""
    x = np.asarray([float(v) for v in values if _finite(v)], dtype=float)
    n = int(x.size)
    out = dict(n=n, mean=NAN, std=NAN, ci_low=NAN, ci_high=NAN)
    if n == 0:
        return out
    out['mean'] = float(x.mean())
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, ci_low=out['mean'] - half, ci_high=out['mean'] + half)
    return out


def probability_of_improvement(diffs: Sequence[float], higher_is_better: bool = True) -> float:
    """Share of paired differences (variant - baseline) that favour the variant; ties count 1/2."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return NAN
    if not higher_is_better:
        d = -d
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def paired_comparison(variant: Mapping[int, float], baseline: Mapping[int, float],
                      higher_is_better: bool = True, confidence: float = 0.95,
                      alpha: float = 0.05) -> Dict[str, object]:
    """Compare a variant with its baseline over the seeds both have.

    Args:
        variant, baseline: ``{seed: metric}`` of the successful runs.

    Returns a dict with ``n`` (pairs), ``seeds``, ``delta`` (mean of variant - baseline),
    ``delta_std``, ``ci_low``/``ci_high`` (t-based CI of ``delta``), ``p_value`` (two-sided
    paired t-test, NaN for fewer than two pairs), ``prob_improvement`` and ``significant``
    (``p_value < alpha``).
    """
    seeds = sorted(s for s in variant if s in baseline and _finite(variant[s])
                   and _finite(baseline[s]))
    a = np.asarray([float(variant[s]) for s in seeds])
    b = np.asarray([float(baseline[s]) for s in seeds])
    d = a - b
    desc = describe(d, confidence)
    p = NAN
    if len(seeds) >= 2:
        if np.allclose(d, d[0], rtol=0.0, atol=1e-12):  # no spread: the t statistic is 0/0 or inf
            p = 1.0 if abs(d[0]) <= 1e-12 else 0.0
        else:
            p = float(_st.ttest_rel(a, b).pvalue)
    return dict(n=len(seeds), seeds=seeds, delta=desc['mean'], delta_std=desc['std'],
                ci_low=desc['ci_low'], ci_high=desc['ci_high'], p_value=p,
                prob_improvement=probability_of_improvement(d, higher_is_better),
                significant=bool(_finite(p) and p < alpha))


def significance_label(p_value: float, alpha: float = 0.05) -> str:
    """``'*'`` (p < alpha), ``'**'`` (p < alpha / 5), ``'n.s.'``, or ``'n<2'`` without a test."""
    if not _finite(p_value):
        return 'n<2'
    if p_value < alpha / 5:
        return '**'
    return '*' if p_value < alpha else 'n.s.'


def stratified_bootstrap_pi(diffs_per_task: Sequence[Sequence[float]],
                            higher_is_better: bool = True, confidence: float = 0.95,
                            reps: int = 2000, seed: int = 0) -> Tuple[float, float, float]:
    """Mean probability of improvement across tasks and its stratified bootstrap percentile CI.

    Each replicate resamples the pairs of every task with replacement (strata = tasks), computes
    the per-task probability of improvement and averages over tasks. Tasks without pairs are
    left out. Returns ``(mean, ci_low, ci_high)``; the CI is NaN when no task has two pairs.
    """
    tasks: List[np.ndarray] = [np.asarray(d, dtype=float) for d in diffs_per_task if len(d)]
    if not tasks:
        return NAN, NAN, NAN
    sign = 1.0 if higher_is_better else -1.0
    point = float(np.mean([probability_of_improvement(d, higher_is_better) for d in tasks]))
    if all(d.size < 2 for d in tasks):
        return point, NAN, NAN
    rng = np.random.default_rng(seed)
    per_task = []
    for d in tasks:
        idx = rng.integers(0, d.size, size=(reps, d.size))
        s = sign * d[idx]
        per_task.append(((s > 0).sum(1) + 0.5 * (s == 0).sum(1)) / d.size)
    boot = np.mean(per_task, axis=0)
    lo, hi = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return point, float(lo), float(hi)


def by_seed(results: Sequence[dict], variant: str, metric: str) -> Dict[int, float]:
    """``{seed: metric}`` of the successful runs of ``variant``."""
    out: Dict[int, float] = {}
    for r in results:
        if r.get('variant') == variant and r.get('status') == 'ok':
            value = (r.get('metrics') or {}).get(metric)
            if _finite(value):
                out[int(r.get('seed'))] = float(value)
    return out


def _finite(x: Optional[float]) -> bool:
    return isinstance(x, (int, float, np.floating)) and not isinstance(x, bool) and \
        math.isfinite(x)
