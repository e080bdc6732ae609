"""Statistics of a regularizer benchmark: per-variant summaries, paired comparisons against the
baseline with a family-wise adjustment, and cross-task aggregates.

* Runs of two variants with the same seed are *paired*: the same seed gives the same data order
  and, as far as the variant allows, the same initialisation. Paired statistics use the seeds
  present in both variants.
* Per variant: mean, sample standard deviation, a t-based 95 % CI of the mean and the
  interquartile mean (IQM, ``scipy.stats.trim_mean(x, 0.25)``; Agarwal et al., "Deep RL at the
  edge of the statistical precipice", NeurIPS 2021).
* Against the baseline: mean paired difference Δ with its t-based 95 % CI (none for constant
  differences), a two-sided p-value (:func:`paired_p_value`: paired t-test, or an exact paired
  permutation test where the t-test is degenerate), Holm's (1979) step-down adjustment over a
  table's comparisons (:func:`holm_adjust`), the probability of improvement
  P(X_variant > X_baseline) over all pairs of runs with a bootstrap CI
  (:func:`probability_of_improvement_ci`) and the minimum detectable effect of the paired
  t-test at the observed n (:func:`minimum_detectable_effect`).
* Across tasks: the mean probability of improvement and the IQM of the baseline-std-normalised
  paired differences, each with a stratified bootstrap CI (runs resampled within each task).
"""
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize as _opt
from scipy import stats as _st

__all__ = ['describe', 'iqm', 'paired_comparison', 'paired_p_value', 'holm_adjust',
           'probability_of_improvement', 'probability_of_improvement_ci',
           'minimum_detectable_effect', 'stratified_bootstrap_pi', 'stratified_bootstrap_iqm',
           'significance_label', 'by_seed', 'EXACT_MAX_ENUMERATION', 'MIN_PAIRS_TTEST']

NAN = float('nan')
#: the paired t-test gives p from this many pairs on (and only for differences that vary)
MIN_PAIRS_TTEST = 3
#: the permutation test enumerates all 2**n sign flips up to this n (Monte Carlo above)
EXACT_MAX_ENUMERATION = 16
BOOTSTRAP_REPS = 2000


def describe(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """``n``, ``mean``, ``std`` (ddof 1), the t-based CI of the mean (``ci_low``, ``ci_high``)
    and ``iqm`` (:func:`iqm`); NaN where undefined (std and CI need two values)."""
    x = np.asarray([float(v) for v in values if _finite(v)], dtype=float)
    n = int(x.size)
    out = dict(n=n, mean=NAN, std=NAN, ci_low=NAN, ci_high=NAN, iqm=NAN)
    if n == 0:
        return out
    out['mean'] = float(x.mean())
    out['iqm'] = iqm(x)
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, ci_low=out['mean'] - half, ci_high=out['mean'] + half)
    return out


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean after dropping the lowest and highest 25 % of the values
    (``scipy.stats.trim_mean(x, 0.25)``, which trims ``floor(0.25 n)`` from each end; the plain
    mean for n < 4). Agarwal et al. 2021 (rliable)."""
    x = np.asarray(values, dtype=float)
    return float(_st.trim_mean(x, 0.25)) if x.size else NAN


def _pi_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Share of pairs (x_i, y_j) with x_i > y_j, ties 1/2, along ``axis`` (vectorised)."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    xi, yj = x[..., :, None], y[..., None, :]
    return ((xi > yj) + 0.5 * (xi == yj)).mean(axis=(-2, -1))


def probability_of_improvement(variant: Sequence[float], baseline: Sequence[float],
                               higher_is_better: bool = True) -> float:
    """P(X_variant > X_baseline) + P(X_variant = X_baseline) / 2, estimated over all n * m pairs
    of runs: the Mann-Whitney U statistic of the variant divided by n * m
    (``scipy.stats.mannwhitneyu``); the probability of improvement of Agarwal et al. 2021
    (rliable). NaN when either side has no run."""
    x = np.asarray(variant, dtype=float)
    y = np.asarray(baseline, dtype=float)
    if not x.size or not y.size:
        return NAN
    if not higher_is_better:
        x, y = -x, -y
    return float(_st.mannwhitneyu(x, y, method='exact' if x.size + y.size < 3 else 'auto')
                 .statistic / (x.size * y.size))


def _bootstrap(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray],
               confidence: float, reps: int, seed: int) -> Tuple[float, float]:
    """Percentile bootstrap CI (``scipy.stats.bootstrap``, each sample resampled independently,
    ``rng = default_rng(seed)``). A sample of one value is the same in every resample and is
    held fixed; NaN when no sample has two values."""
    free = [i for i, s in enumerate(samples) if s.size >= 2]
    if not free:
        return NAN, NAN

    def stat(*drawn, axis=-1):
        full = list(samples)
        for i, d in zip(free, drawn):
            full[i] = d
        shape = np.broadcast_shapes(*(np.moveaxis(d, axis, -1).shape[:-1] for d in drawn))
        full = [np.broadcast_to(np.moveaxis(s, axis, -1), shape + (s.shape[-1],))
                if i in free else np.broadcast_to(s, shape + (s.size,))
                for i, s in enumerate(full)]
        return statistic(*full)

    res = _st.bootstrap([samples[i] for i in free], stat, n_resamples=reps, vectorized=True,
                        paired=False, confidence_level=confidence, method='percentile',
                        rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def probability_of_improvement_ci(variant: Sequence[float], baseline: Sequence[float],
                                  higher_is_better: bool = True, confidence: float = 0.95,
                                  reps: int = BOOTSTRAP_REPS,
                                  seed: int = 0) -> Tuple[float, float, float]:
    """:func:`probability_of_improvement` and its percentile bootstrap CI (the runs of each
    variant resampled independently, fixed seed): ``(point, ci_low, ci_high)``."""
    x = np.asarray(variant, dtype=float)
    y = np.asarray(baseline, dtype=float)
    point = probability_of_improvement(x, y, higher_is_better)
    if not _finite(point):
        return NAN, NAN, NAN
    if not higher_is_better:
        x, y = -x, -y
    lo, hi = _bootstrap([x, y], _pi_statistic, confidence, reps, seed)
    return point, lo, hi


def _constant(d: np.ndarray) -> bool:
    return bool(np.ptp(d) <= 1e-9 * max(1.0, float(np.max(np.abs(d)))))


def paired_p_value(variant: Sequence[float], baseline: Sequence[float],
                   seed: int = 0) -> Tuple[float, str]:
    """Two-sided p-value for "no difference" between paired values, and the test that gave it.

    * ``'t'``: the paired t-test (``scipy.stats.ttest_rel``), used from
      :data:`MIN_PAIRS_TTEST` pairs on when the differences vary;
    * ``'exact'``: otherwise (2 pairs, or constant differences, where the t statistic is 0/0 or
      infinite) the exact paired permutation test of the mean difference over all 2**n sign
      flips (``scipy.stats.permutation_test``, ``permutation_type='samples'``; Fisher 1935). Its
      p is never 0: at least 2 / 2**n, and 1 when every difference is 0. Above
      :data:`EXACT_MAX_ENUMERATION` pairs it is a Monte Carlo permutation test (``'permutation'``).
    * ``(nan, '')`` for fewer than two pairs.
    """
    a = np.asarray(variant, dtype=float)
    b = np.asarray(baseline, dtype=float)
    n = a.size
    if n < 2:
        return NAN, ''
    d = a - b
    if n >= MIN_PAIRS_TTEST and not _constant(d):
        return float(_st.ttest_rel(a, b).pvalue), 't'
    if _constant(d) and abs(float(d.mean())) <= 1e-12:
        return 1.0, 'exact'  # every sign flip gives the same (zero) mean: p = 1 exactly
    exact = n <= EXACT_MAX_ENUMERATION
    res = _st.permutation_test(
        (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type='samples',
        vectorized=True, n_resamples=np.inf if exact else 99999,
        rng=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue)), 'exact' if exact else 'permutation'


def holm_adjust(p_values: Sequence[float]) -> List[float]:
    """Holm's (1979) step-down family-wise adjusted p-values: with the m finite p sorted
    ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``. Rejecting where
    ``p_adj < alpha`` controls the family-wise error rate at alpha. NaN stays NaN and is not
    counted in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind='stable')]
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(v) for v in out]


def _ttest_power(nc: float, df: int, alpha: float) -> float:
    tc = _st.t.ppf(1 - alpha / 2, df)
    # the lower tail P(T < -tc) = P(T_{-nc} > tc) is negligible for the nc of interest and
    # scipy's nct can return NaN there; it counts as 0 then
    lower = float(_st.nct.sf(tc, df, -nc))
    return float(_st.nct.sf(tc, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def minimum_detectable_effect(diff_std: float, n: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest true mean paired difference the two-sided paired t-test at level ``alpha``
    detects with probability ``power`` from ``n`` pairs, if the differences have standard
    deviation ``diff_std``: ``delta = nc * diff_std / sqrt(n)`` where ``nc`` solves
    ``P(|T| > t_{1-alpha/2, n-1}) = power`` for T noncentral t (``scipy.stats.nct``) with n - 1
    df and noncentrality ``nc`` (exact, not the normal approximation). NaN for n < 2 or a
    non-positive / non-finite std."""
    if n < 2 or not _finite(diff_std) or diff_std <= 0:
        return NAN
    df = n - 1
    hi = 1.0
    while _ttest_power(hi, df, alpha) < power:
        hi *= 2
    nc = _opt.brentq(lambda c: _ttest_power(c, df, alpha) - power, 0.0, hi, xtol=1e-10)
    return float(nc * diff_std / math.sqrt(n))


def paired_comparison(variant: Mapping[int, float], baseline: Mapping[int, float],
                      higher_is_better: bool = True, confidence: float = 0.95,
                      alpha: float = 0.05, power: float = 0.8, reps: int = BOOTSTRAP_REPS,
                      seed: int = 0) -> Dict[str, object]:
    """Compare a variant with its baseline.

    Args:
        variant, baseline: ``{seed: metric}`` of the successful runs.

    Returns a dict with, over the seeds both have: ``n`` (pairs), ``seeds``, ``delta`` (mean of
    variant - baseline), ``delta_std``, ``ci_low``/``ci_high`` (t-based CI of ``delta``; NaN for
    constant differences, whose zero-width interval would claim certainty), ``p_value`` and
    ``test`` (:func:`paired_p_value`), ``significant`` (``p_value < alpha``, unadjusted) and
    ``mde`` (:func:`minimum_detectable_effect` at ``n``); over all runs of each side:
    ``prob_improvement`` with ``pi_ci_low``/``pi_ci_high``
    (:func:`probability_of_improvement_ci`), ``n_variant``, ``n_baseline``.
    """
    seeds = sorted(s for s in variant if s in baseline and _finite(variant[s])
                   and _finite(baseline[s]))
    a = np.asarray([float(variant[s]) for s in seeds])
    b = np.asarray([float(baseline[s]) for s in seeds])
    d = a - b
    desc = describe(d, confidence)
    p, test = paired_p_value(a, b, seed)
    lo, hi = desc['ci_low'], desc['ci_high']
    if len(seeds) >= 2 and _constant(d):
        lo = hi = NAN
    xs = [float(v) for v in variant.values() if _finite(v)]
    ys = [float(v) for v in baseline.values() if _finite(v)]
    pi, pi_lo, pi_hi = probability_of_improvement_ci(xs, ys, higher_is_better, confidence,
                                                     reps, seed)
    return dict(n=len(seeds), seeds=seeds, delta=desc['mean'], delta_std=desc['std'],
                ci_low=lo, ci_high=hi, p_value=p, test=test,
                significant=bool(_finite(p) and p < alpha),
                mde=minimum_detectable_effect(desc['std'], len(seeds), alpha, power),
                prob_improvement=pi, pi_ci_low=pi_lo, pi_ci_high=pi_hi,
                n_variant=len(xs), n_baseline=len(ys))


def significance_label(p_value: float, alpha: float = 0.05) -> str:
    """``'*'`` (p < alpha), ``'**'`` (p < alpha / 5), ``'n.s.'``, or ``'n<2'`` without a test.
    The tables pass Holm-adjusted p-values."""
    if not _finite(p_value):
        return 'n<2'
    if p_value < alpha / 5:
        return '**'
    return '*' if p_value < alpha else 'n.s.'


def _mean_pi_statistic(*samples: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task P(improve); ``samples`` = (x_1, y_1, x_2, y_2, ...)."""
    return np.mean([_pi_statistic(samples[i], samples[i + 1])
                    for i in range(0, len(samples), 2)], axis=0)


def stratified_bootstrap_pi(per_task: Sequence[Tuple[Sequence[float], Sequence[float]]],
                            higher_is_better: bool = True, confidence: float = 0.95,
                            reps: int = BOOTSTRAP_REPS,
                            seed: int = 0) -> Tuple[float, float, float]:
    """Mean over tasks of :func:`probability_of_improvement` and its stratified percentile
    bootstrap CI: every replicate resamples, with replacement, the runs of the variant and
    those of the baseline within each task (strata = task x variant; ``scipy.stats.bootstrap``
    with ``paired=False``) and averages the per-task probabilities (Agarwal et al. 2021).

    Args:
        per_task: ``(variant_values, baseline_values)`` per task; tasks where either side has
            no run are left out.

    Returns ``(mean, ci_low, ci_high)``; the CI is NaN when no sample has two runs.
    """
    samples: List[np.ndarray] = []
    for x, y in per_task:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.size and y.size:
            samples += [x, y] if higher_is_better else [-x, -y]
    if not samples:
        return NAN, NAN, NAN
    point = float(_mean_pi_statistic(*samples))
    lo, hi = _bootstrap(samples, _mean_pi_statistic, confidence, reps, seed)
    return point, lo, hi


def stratified_bootstrap_iqm(per_task: Sequence[Sequence[float]], confidence: float = 0.95,
                             reps: int = BOOTSTRAP_REPS,
                             seed: int = 0) -> Tuple[float, float, float]:
    """IQM (:func:`iqm`) of the values of all tasks pooled, with a stratified percentile
    bootstrap CI (values resampled within each task; ``scipy.stats.bootstrap``). Used on the
    per-pair differences divided by the task's baseline std (Agarwal et al. 2021's IQM over
    runs x tasks, on a normalised score scale). Returns ``(iqm, ci_low, ci_high)``."""
    samples = [np.asarray(v, dtype=float) for v in per_task if len(v)]
    if not samples:
        return NAN, NAN, NAN

    def stat(*s: np.ndarray) -> np.ndarray:
        return _st.trim_mean(np.concatenate(s, axis=-1), 0.25, axis=-1)

    point = float(stat(*samples))
    lo, hi = _bootstrap(samples, stat, confidence, reps, seed)
    return point, lo, hi


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
