"""Benchmark statistics against hand-computed values and against scipy called directly."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from mmvitreg.benchmark.stats import (describe, holm_adjust, iqm, minimum_detectable_effect,
                                      paired_comparison, paired_p_value, probability_of_improvement,
                                      probability_of_improvement_ci, significance_label,
                                      stratified_bootstrap_iqm, stratified_bootstrap_pi)


def _pi_by_hand(x, y):
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))


def test_describe_by_hand():
    # values 1, 2, 3, 4: mean 2.5, sample var 5/3, t(0.975, 3) = 3.182446305284263
    d = describe([1, 2, 3, 4])
    assert d['n'] == 4 and d['mean'] == 2.5
    assert d['std'] == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert d['ci_low'] == pytest.approx(2.5 - half) and d['ci_high'] == pytest.approx(2.5 + half)
    one = describe([7.0])
    assert one['mean'] == 7.0 and math.isnan(one['std']) and math.isnan(one['ci_low'])
    assert describe([])['n'] == 0 and math.isnan(describe([])['mean'])


def test_iqm_is_the_interquartile_mean():
    x = [1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 6.0, 7.0]  # n = 8: drop 2 from each end
    assert iqm(x) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm(x) == pytest.approx(st.trim_mean(x, 0.25))
    assert describe(x)['iqm'] == pytest.approx(4.5) and describe(x)['mean'] == 16.0
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)  # n < 4: nothing to trim
    assert math.isnan(iqm([]))


def test_paired_difference_by_hand():
    # diffs 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), df 2
    base = {0: 10.0, 1: 20.0, 2: 30.0}
    var = {0: 11.0, 1: 22.0, 2: 33.0}
    c = paired_comparison(var, base)
    assert c['n'] == 3 and c['seeds'] == [0, 1, 2] and c['test'] == 't'
    assert c['delta'] == pytest.approx(2.0) and c['delta_std'] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2)
    assert c['ci_low'] == pytest.approx(2 - half) and c['ci_high'] == pytest.approx(2 + half)
    # two-sided p of t = 2 sqrt(3) with 2 df: closed form for df 2
    t = 2 * math.sqrt(3)
    assert c['p_value'] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert c['significant'] is False  # p = 0.074
    # pairwise: 11 > 10; 22 > 10, 20; 33 > all three: 6 of 9 pairs (not 3/3 seeds won)
    assert c['prob_improvement'] == pytest.approx(6 / 9)


def test_paired_matches_scipy_and_pairs_by_seed():
    rng = np.random.default_rng(1)
    base = {s: float(v) for s, v in enumerate(rng.normal(80, 2, 8))}
    var = {s: base[s] + float(d) for s, d in enumerate(rng.normal(1.0, 1.0, 8))}
    var.pop(3)          # a failed run: its seed drops out of the pairing
    base[99] = 0.0      # a seed only the baseline has
    c = paired_comparison(var, base)
    seeds = [s for s in range(8) if s != 3]
    a = np.array([var[s] for s in seeds])
    b = np.array([base[s] for s in seeds])
    assert c['seeds'] == seeds and c['n'] == 7 and c['test'] == 't'
    assert c['p_value'] == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-12)
    lo, hi = st.t.interval(0.95, 6, loc=(a - b).mean(), scale=st.sem(a - b))
    assert (c['ci_low'], c['ci_high']) == pytest.approx((lo, hi), rel=1e-12)
    # the pairing matters: an unpaired test on the same numbers is far weaker here
    assert c['p_value'] < st.ttest_ind(a, b).pvalue
    # the CI excludes 0 exactly when p < 0.05
    assert c['significant'] == (c['ci_low'] > 0 or c['ci_high'] < 0)
    # P(improve) runs over all runs of each side: 7 variant runs x 9 baseline runs (unequal n)
    assert (c['n_variant'], c['n_baseline']) == (7, 9)
    x, y = list(var.values()), list(base.values())
    assert c['prob_improvement'] == pytest.approx(st.mannwhitneyu(x, y).statistic / 63)
    assert c['prob_improvement'] == pytest.approx(_pi_by_hand(x, y))


@pytest.mark.parametrize('n', [2, 3, 5])
def test_constant_differences_get_an_exact_test_never_p_zero(n):
    """One more test image right on every seed: the t statistic is infinite, the old p was 0."""
    base = {s: 80.0 + 3 * s for s in range(n)}
    var = {s: v + 0.5 for s, v in base.items()}
    c = paired_comparison(var, base)
    a, b = np.array(list(var.values())), np.array(list(base.values()))
    assert c['test'] == 'exact' and c['p_value'] > 0
    # independently: the exact sign-flip permutation test and the sign test agree: 2 / 2^n
    perm = st.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                               permutation_type='samples', vectorized=True, n_resamples=np.inf)
    sign = st.binomtest(n, n, 0.5).pvalue
    assert c['p_value'] == pytest.approx(perm.pvalue) == pytest.approx(sign)
    assert c['p_value'] == pytest.approx(2 / 2 ** n)
    assert c['significant'] is False  # 2 / 2^5 = 0.0625: 5 seeds can never reach 0.05 this way
    assert math.isnan(c['ci_low']) and math.isnan(c['ci_high'])  # no zero-width CI
    assert math.isnan(c['mde']) and c['delta'] == pytest.approx(0.5)


def test_two_pairs_use_the_exact_test_and_small_n_edge_cases():
    # n = 2 with varying differences: the t-test has 1 df (Cauchy tails): exact test instead
    p, test = paired_p_value([2.0, 3.1], [1.0, 2.0])
    assert test == 'exact' and p == pytest.approx(0.5)  # min over 4 sign patterns: 2/4
    assert st.ttest_rel([2.0, 3.1], [1.0, 2.0]).pvalue < 0.05  # what the t-test would say
    # all ties: nothing differs, p = 1 exactly
    c = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert c['delta'] == 0 and c['p_value'] == 1.0 and c['test'] == 'exact'
    assert c['prob_improvement'] == pytest.approx(st.mannwhitneyu([1, 2, 3], [1, 2, 3])
                                                  .statistic / 9) == pytest.approx(0.5)
    # one pair: no test
    c = paired_comparison({0: 2.0}, {0: 1.0})
    assert c['n'] == 1 and math.isnan(c['p_value']) and c['test'] == ''
    assert math.isnan(c['ci_low']) and math.isnan(c['pi_ci_low'])
    assert significance_label(c['p_value']) == 'n<2'
    assert [significance_label(p) for p in (0.005, 0.03, 0.2)] == ['**', '*', 'n.s.']


def test_probability_of_improvement_is_pairwise_mann_whitney():
    x, y = [3.0, 1.0, 2.0, 2.0], [2.0, 0.5, 4.0]
    u = st.mannwhitneyu(x, y).statistic
    assert probability_of_improvement(x, y) == pytest.approx(u / 12) == \
        pytest.approx(_pi_by_hand(x, y))
    # lower is better: the probability that the variant's value is the smaller
    assert probability_of_improvement(x, y, higher_is_better=False) == \
        pytest.approx(_pi_by_hand(y, x)) == pytest.approx(1 - u / 12)
    assert probability_of_improvement([5.0] * 3, [5.0] * 2) == 0.5  # all ties
    assert math.isnan(probability_of_improvement([], [1.0]))


def test_probability_of_improvement_ci_is_scipys_percentile_bootstrap():
    x, y = [81.0, 84.0, 87.0, 83.0], [80.0, 82.0, 84.0, 86.0, 85.0]
    point, lo, hi = probability_of_improvement_ci(x, y, reps=3000, seed=7)

    def pi(a, b):  # independent, unvectorised
        return _pi_by_hand(a, b)

    ref = st.bootstrap((x, y), pi, n_resamples=3000, vectorized=False, paired=False,
                       method='percentile', rng=np.random.default_rng(7)).confidence_interval
    assert point == pytest.approx(pi(x, y))
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert lo < point < hi
    assert probability_of_improvement_ci(x, y, reps=3000, seed=7) == (point, lo, hi)
    # complete separation: every resample gives 1
    assert probability_of_improvement_ci([5, 6, 7], [1, 2, 3]) == (1.0, 1.0, 1.0)
    # one baseline run: it is held fixed, the variant's runs are resampled
    point, lo, hi = probability_of_improvement_ci([1.0, 3.0], [2.0])
    assert point == 0.5 and (lo, hi) == (0.0, 1.0)


def test_holm_adjustment():
    # the README's demo: DHVT p = 0.0103 among five comparisons -> 5 * 0.0103
    raw = [0.614, 0.075, 0.105, 0.397, 0.0103]
    adj = holm_adjust(raw)
    assert adj[4] == pytest.approx(0.0515)
    # by hand: sorted 0.0103, 0.075, 0.105, 0.397, 0.614 times 5, 4, 3, 2, 1, running max
    assert adj == pytest.approx([0.794, 0.3, 0.315, 0.794, 0.0515])
    # monotone step-down: a later p never gets a smaller adjustment; capped at 1; NaN ignored
    assert holm_adjust([0.01, 0.011, float('nan'), 0.9]) == pytest.approx(
        [0.03, 0.03, float('nan'), 0.9], nan_ok=True)
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0] and holm_adjust([]) == []
    # against the step-down definition: H_(i) is rejected at level a iff p_(j) <= a / (m - j + 1)
    # for all j <= i; the adjusted p is <= a exactly for the rejected hypotheses
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.08, size=6)
        adj = holm_adjust(p)
        for a in (0.01, 0.03, 0.05):
            order = np.argsort(p)
            rejected = set()
            for j, i in enumerate(order):
                if p[i] > a / (len(p) - j):
                    break
                rejected.add(int(i))
            assert {i for i in range(len(p)) if adj[i] <= a} == rejected


def test_minimum_detectable_effect_has_the_stated_power():
    for n in (2, 5, 10):
        mde = minimum_detectable_effect(2.0, n)
        # independently: the power of the two-sided paired t-test at delta = mde is 0.8 (the
        # lower rejection tail is < 1e-6 there; scipy's nct.cdf can be NaN that far out)
        df, nc = n - 1, mde * math.sqrt(n) / 2.0
        tc = st.t.ppf(0.975, df)
        assert st.nct.sf(tc, df, nc) == pytest.approx(0.8, abs=1e-6)
    # the textbook value: n = 30, std 1 -> Cohen's d 0.529 (G*Power)
    assert minimum_detectable_effect(1.0, 30) == pytest.approx(0.529, abs=1e-3)
    # and by simulation: t-tests of normal differences with mean mde reject ~80 % of the time
    rng = np.random.default_rng(0)
    d = rng.normal(minimum_detectable_effect(1.0, 5), 1.0, size=(20000, 5))
    p = st.ttest_1samp(d, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.015)
    assert minimum_detectable_effect(1.0, 5) > minimum_detectable_effect(1.0, 10)
    assert math.isnan(minimum_detectable_effect(0.0, 5))
    assert math.isnan(minimum_detectable_effect(1.0, 1))


def test_stratified_bootstrap_pi():
    # task A: the variant beats every baseline run (PI 1); task B: 4 of 9 pairs + 1 tie
    a = ([5.0, 6.0, 7.0], [1.0, 2.0, 3.0])
    b = ([1.0, 2.0, 3.0], [1.5, 2.5, 3.0])
    point, lo, hi = stratified_bootstrap_pi([a, b], reps=3000)
    pi_b = st.mannwhitneyu(*b).statistic / 9
    assert point == pytest.approx((1 + pi_b) / 2)
    assert lo < point < hi and lo >= 0.5 and hi <= 1.0

    def mean_pi(xa, ya, xb, yb):  # independent, unvectorised
        return (_pi_by_hand(xa, ya) + _pi_by_hand(xb, yb)) / 2

    ref = st.bootstrap((*a, *b), mean_pi, n_resamples=3000, vectorized=False,
                       method='percentile', rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    # task A is 1 in every resample: each replicate is 0.5 + PI_B / 2, PI_B on the 1/18 grid
    assert (lo * 36) == pytest.approx(round(lo * 36))
    assert stratified_bootstrap_pi([a, b], seed=3) == stratified_bootstrap_pi([a, b], seed=3)
    # a single run per variant and task: no CI
    point, lo, hi = stratified_bootstrap_pi([([1.0], [0.0]), ([-1.0], [0.0])])
    assert point == 0.5 and math.isnan(lo) and math.isnan(hi)
    # lower is better flips the direction; tasks without runs are left out
    assert stratified_bootstrap_pi([a], higher_is_better=False)[0] == 0.0
    assert stratified_bootstrap_pi([a, ([], [1.0])])[0] == 1.0
    assert all(math.isnan(v) for v in stratified_bootstrap_pi([]))


def test_stratified_bootstrap_iqm():
    tasks = [[0.5, 1.0, 1.5, 9.0], [0.2, 0.4, -3.0]]
    point, lo, hi = stratified_bootstrap_iqm(tasks, reps=3000)
    pooled = [v for t in tasks for v in t]
    assert point == pytest.approx(st.trim_mean(pooled, 0.25))
    ref = st.bootstrap(tasks, lambda *s: st.trim_mean(np.concatenate(s), 0.25),
                       n_resamples=3000, vectorized=False, method='percentile',
                       rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    # robust: the outliers 9 and -3 move the mean far more than the IQM
    assert abs(point - np.median(pooled)) < abs(np.mean(pooled) - np.median(pooled))
    assert all(math.isnan(v) for v in stratified_bootstrap_iqm([]))


def test_exhaustive_permutation_matches_enumeration():
    # the exact test by brute force over all 2^n sign flips of the differences
    a, b = np.array([3.0, 2.5, 4.0, 1.0]), np.array([1.0, 1.0, 1.5, 1.5])
    d = a - b
    flips = np.array(list(itertools.product([1, -1], repeat=d.size)))
    null = (flips * d).mean(axis=1)
    brute = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    perm = st.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                               permutation_type='samples', vectorized=True, n_resamples=np.inf)
    assert perm.pvalue == pytest.approx(brute)
    # n = 4 varying differences: the t-test gives p; for n = 2 the enumeration does
    assert paired_p_value(a, b)[1] == 't'
    p2, test = paired_p_value(a[:2], b[:2])
    assert test == 'exact'
    flips2 = np.array(list(itertools.product([1, -1], repeat=2)))
    assert p2 == pytest.approx(np.mean(np.abs((flips2 * d[:2]).mean(1)) >= abs(d[:2].mean())))
