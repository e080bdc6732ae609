"""Benchmark statistics against hand-computed values and against scipy directly."""
import math

import numpy as np
import pytest
from scipy import stats as st

from mmvitreg.benchmark.stats import (describe, paired_comparison, probability_of_improvement,
                                      significance_label, stratified_bootstrap_pi)


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


def test_paired_difference_by_hand():
    # diffs 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), df 2
    base = {0: 10.0, 1: 20.0, 2: 30.0}
    var = {0: 11.0, 1: 22.0, 2: 33.0}
    c = paired_comparison(var, base)
    assert c['n'] == 3 and c['seeds'] == [0, 1, 2]
    assert c['delta'] == pytest.approx(2.0) and c['delta_std'] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2)
    assert c['ci_low'] == pytest.approx(2 - half) and c['ci_high'] == pytest.approx(2 + half)
    # two-sided p of t = 2 sqrt(3) with 2 df: 1 - 2 sqrt(3) / sqrt(12 + 4) ... closed form for df 2
    t = 2 * math.sqrt(3)
    assert c['p_value'] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert c['prob_improvement'] == 1.0 and c['significant'] is False  # p = 0.074


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
    assert c['seeds'] == seeds and c['n'] == 7
    assert c['p_value'] == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-12)
    lo, hi = st.t.interval(0.95, 6, loc=(a - b).mean(), scale=st.sem(a - b))
    assert (c['ci_low'], c['ci_high']) == pytest.approx((lo, hi), rel=1e-12)
    # the pairing matters: an unpaired test on the same numbers is far weaker here
    assert c['p_value'] < st.ttest_ind(a, b).pvalue
    # the CI excludes 0 exactly when p < 0.05
    assert c['significant'] == (c['ci_low'] > 0 or c['ci_high'] < 0)


def test_lower_is_better_and_ties():
    assert probability_of_improvement([1, -1, 0, 2]) == pytest.approx((2 + 0.5) / 4)
    assert probability_of_improvement([1, -1, 0, 2], higher_is_better=False) == \
        pytest.approx((1 + 0.5) / 4)
    c = paired_comparison({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert c['delta'] == 0 and c['p_value'] == 1.0 and c['prob_improvement'] == 0.5
    c = paired_comparison({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # identical nonzero diffs
    assert c['p_value'] == 0.0 and c['significant']
    c = paired_comparison({0: 2.0}, {0: 1.0})
    assert c['n'] == 1 and math.isnan(c['p_value']) and math.isnan(c['ci_low'])
    assert significance_label(c['p_value']) == 'n<2'
    assert [significance_label(p) for p in (0.005, 0.03, 0.2)] == ['**', '*', 'n.s.']


def test_stratified_bootstrap_pi():
    # task A: variant better on all 4 seeds (PI 1), task B: worse on 2 of 4 (PI 0.5)
    point, lo, hi = stratified_bootstrap_pi([[1, 2, 3, 4], [1, -1, 2, -2]], reps=4000)
    assert point == pytest.approx(0.75)
    assert lo < 0.75 < hi and lo >= 0.5 and hi <= 1.0
    # task A's PI is 1 in every resample, so each replicate is 0.5 + PI_B / 2 with PI_B in
    # {0, 1/4, ..., 1}: the interval lies on that grid inside [0.5, 1]
    assert lo >= 0.5 and hi <= 1.0 and (lo * 8) == pytest.approx(round(lo * 8))
    # deterministic for a given seed; a single pair per task has no CI
    assert stratified_bootstrap_pi([[1, 2], [3, -1]], seed=3) == \
        stratified_bootstrap_pi([[1, 2], [3, -1]], seed=3)
    point, lo, hi = stratified_bootstrap_pi([[1.0], [-1.0]])
    assert point == 0.5 and math.isnan(lo) and math.isnan(hi)
    # lower is better flips the sign
    assert stratified_bootstrap_pi([[1, 2]], higher_is_better=False)[0] == 0.0
