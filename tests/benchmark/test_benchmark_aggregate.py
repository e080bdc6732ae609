"""The benchmark table: per-variant CIs, paired statistics vs the baseline (raw and Holm p,
pairwise P(improve), MDE), the same numbers in markdown, CSV and JSON."""
import csv
import io
import math

import numpy as np
import pytest
from scipy import stats as st

from mmvitreg.benchmark.aggregate import summarize, summary_columns, to_csv, to_markdown
from mmvitreg.benchmark.stats import minimum_detectable_effect

M = 'accuracy/top1'


def _run(variant, seed, value, status='ok', **kw):
    return dict(variant=variant, seed=seed, status=status,
                metrics={} if value is None else {M: value}, wall_s=10.0 + seed,
                peak_rss_mb=100.0 + seed, **kw)


RESULTS = [
    _run('base', 0, 80.0), _run('base', 1, 82.0), _run('base', 2, 84.0), _run('base', 3, 86.0),
    # +1, +2, +3 on seeds 0-2; seed 3 failed: paired over 3 seeds only
    _run('dk', 0, 81.0), _run('dk', 1, 84.0), _run('dk', 2, 87.0),
    _run('dk', 3, None, status='failed', error='train: boom'),
    # identical to the baseline
    _run('same', 0, 80.0), _run('same', 1, 82.0), _run('same', 2, 84.0), _run('same', 3, 86.0),
]


def test_summary_ci_and_paired_stats():
    rows = {r['variant']: r for r in summarize(RESULTS, ['base', 'dk', 'same'], [M], 'base')}
    base, dk, same = rows['base'], rows['dk'], rows['same']
    assert base[f'{M}/n'] == 4 and base[f'{M}/mean'] == 83.0
    assert base[f'{M}/std'] == pytest.approx(math.sqrt(20 / 3))
    lo, hi = st.t.interval(0.95, 3, loc=83.0, scale=math.sqrt(20 / 3) / 2)
    assert (base[f'{M}/ci_low'], base[f'{M}/ci_high']) == pytest.approx((lo, hi))
    assert math.isnan(base[f'{M}/delta']) and base[f'{M}/sig'] == ''
    # dk: pairs on seeds 0, 1, 2 (its seed 3 failed): diffs 1, 2, 3
    assert dk['status'] == 'partial' and 'seed 3: train: boom' in dk['errors']
    assert dk[f'{M}/n_pairs'] == 3 and dk[f'{M}/delta'] == pytest.approx(2.0)
    # NOT the unpaired difference of means (84 - 83 = 1)
    assert dk[f'{M}/mean'] == pytest.approx(84.0)
    assert dk[f'{M}/p_value'] == pytest.approx(
        st.ttest_rel([81, 84, 87], [80, 82, 84]).pvalue)
    assert dk[f'{M}/test'] == 't' and dk[f'{M}/sig'] == 'n.s.'
    # P(improve) over all 3 x 4 pairs of runs (the baseline's seed 3 included: unequal n), not
    # the share of paired seeds won (3/3)
    assert dk[f'{M}/prob_improvement'] == pytest.approx(
        st.mannwhitneyu([81, 84, 87], [80, 82, 84, 86]).statistic / 12) == pytest.approx(7.5 / 12)
    assert dk[f'{M}/pi_ci_low'] < dk[f'{M}/prob_improvement'] < dk[f'{M}/pi_ci_high']
    assert dk[f'{M}/rel_gain_pct'] == pytest.approx(100 * 2 / 82.0)  # vs the paired seeds
    assert dk[f'{M}/mde'] == pytest.approx(minimum_detectable_effect(1.0, 3))
    assert same[f'{M}/delta'] == 0 and same[f'{M}/p_value'] == 1.0
    assert same[f'{M}/test'] == 'exact' and math.isnan(same[f'{M}/delta_ci_low'])
    assert same[f'{M}/prob_improvement'] == 0.5 and same[f'{M}/sig'] == 'n.s.'
    # Holm over the two comparisons: dk's 0.074 is the smaller of the two -> x2
    assert dk[f'{M}/p_holm'] == pytest.approx(2 * dk[f'{M}/p_value'])
    assert same[f'{M}/p_holm'] == 1.0 and math.isnan(base[f'{M}/p_holm'])
    assert base[f'{M}/iqm'] == pytest.approx(st.trim_mean([80, 82, 84, 86], 0.25))


def test_markdown_csv_json_carry_the_same_numbers():
    rows = summarize(RESULTS, ['base', 'dk', 'same'], [M], 'base')
    md = to_markdown(rows, RESULTS, [M], 'base', title='t')
    dk = next(r for r in rows if r['variant'] == 'dk')
    line = next(ln for ln in md.splitlines() if ln.startswith('| dk |'))
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[:2] == ['dk', '3/4']
    assert cells[2] == '84.00 ± 3.00' and cells[4] == '84.00'  # IQM of 81, 84, 87
    assert cells[5] == '+2.00'
    assert cells[6] == f"[{dk[f'{M}/delta_ci_low']:+.2f}, {dk[f'{M}/delta_ci_high']:+.2f}]"
    assert cells[7] == f"{dk[f'{M}/p_value']:.3f}" and cells[8] == f"{dk[f'{M}/p_holm']:.3f}"
    assert cells[9] == (f"0.62 [{dk[f'{M}/pi_ci_low']:.2f}, {dk[f'{M}/pi_ci_high']:.2f}]")
    assert cells[10] == 'n.s.'
    # 'same' has constant (zero) differences: exact test, marked, no CI of Δ
    same = [c.strip() for c in next(ln for ln in md.splitlines()
                                     if ln.startswith('| same |')).strip('|').split('|')]
    assert same[6] == '-' and same[7] == '1.000†'
    assert 'n = 3-4 seeds per variant' in md and 'ttest_rel' in md
    assert "Holm's (1979)" in md and 'k = 2 comparisons' in md and 'permutation_test' in md
    assert 'mannwhitneyu' in md and 'no correction for multiple comparisons' not in md
    mde = next(ln for ln in md.splitlines() if ln.startswith('Minimum detectable effect'))
    assert 'power 0.8' in mde and 'scipy.stats.nct' in mde
    assert f"dk {dk[f'{M}/mde']:.2f}, same -" in mde
    assert '| base | 4/4 |' in md and '(baseline)' in md
    parsed = {r['variant']: r for r in csv.DictReader(io.StringIO(to_csv(rows,
                                                                         summary_columns([M]))))}
    for key in ('delta', 'delta_ci_low', 'delta_ci_high', 'p_value', 'p_holm', 'prob_improvement',
                'pi_ci_low', 'pi_ci_high', 'mde', 'iqm'):
        assert float(parsed['dk'][f'{M}/{key}']) == pytest.approx(dk[f'{M}/{key}'], abs=1e-6)
    assert parsed['dk'][f'{M}/test'] == 't' and parsed['same'][f'{M}/test'] == 'exact'
    assert parsed['dk'][f'{M}/sig'] == 'n.s.' and parsed['dk'][f'{M}/significant'] == 'false'
    assert parsed['base'][f'{M}/p_value'] == ''  # NaN -> empty cell


def test_significant_difference_is_marked():
    res = [_run('a', s, 50.0 + s) for s in range(5)] + \
          [_run('b', s, 55.0 + s + 0.1 * (s % 2)) for s in range(5)]
    rows = summarize(res, ['a', 'b'], [M], 'a')
    assert rows[1][f'{M}/sig'] == '**' and rows[1][f'{M}/significant'] is True
    line = next(ln for ln in to_markdown(rows, res, [M], 'a').splitlines()
                if ln.startswith('| b |'))
    assert [c.strip() for c in line.strip('|').split('|')][10] == '**'


def test_stars_come_from_the_holm_adjusted_p():
    """p = 0.0103 alone is significant; as the smallest of five comparisons it is not
    (Holm: 5 x 0.0103 = 0.051), the README demo's case."""
    rng = np.random.default_rng(0)
    base = rng.normal(90, 3, 5)
    res = [_run('base', s, float(v)) for s, v in enumerate(base)]
    # b: a clear gain on every seed with some spread; c..f: noise around the baseline
    gains = {'b': [4.0, 8.0, 5.5, 1.5, 7.0]}
    for name in 'cdef':
        gains[name] = list(rng.normal(0, 3, 5))
    for name, g in gains.items():
        res += [_run(name, s, float(base[s] + g[s])) for s in range(5)]
    alone = summarize(res, ['base', 'b'], [M], 'base')[1]
    rows = {r['variant']: r for r in summarize(res, ['base', *gains], [M], 'base')}
    b = rows['b']
    raw = st.ttest_rel(base + np.array(gains['b']), base).pvalue
    assert b[f'{M}/p_value'] == pytest.approx(raw) == pytest.approx(alone[f'{M}/p_value'])
    assert 0.01 < raw < 0.05  # p = 0.0105
    assert alone[f'{M}/sig'] == '*' and alone[f'{M}/p_holm'] == pytest.approx(raw)
    ps = sorted(rows[v][f'{M}/p_value'] for v in gains)
    assert ps[0] == pytest.approx(raw) and ps[1] > 5 * raw  # b is the smallest: x5
    assert b[f'{M}/p_holm'] == pytest.approx(5 * raw)
    assert b[f'{M}/sig'] == 'n.s.' and b[f'{M}/significant'] is False
    line = next(ln for ln in to_markdown(list(rows.values()), res, [M], 'base').splitlines()
                if ln.startswith('| b |'))
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[7:11] == [f'{raw:.3f}', f'{5 * raw:.3f}', cells[9], 'n.s.']


def test_constant_difference_is_not_significant_on_three_seeds():
    """One more test image right on every seed (the issue's case): not p = 0 and '**'."""
    res = [_run('a', s, 50.0 + s) for s in range(3)] + [_run('b', s, 50.5 + s) for s in range(3)]
    (_, b) = summarize(res, ['a', 'b'], [M], 'a')
    assert b[f'{M}/p_value'] == pytest.approx(0.25) and b[f'{M}/test'] == 'exact'
    assert b[f'{M}/sig'] == 'n.s.' and b[f'{M}/significant'] is False
    assert math.isnan(b[f'{M}/delta_ci_low']) and math.isnan(b[f'{M}/mde'])


def test_lower_is_better_flips_probability_of_improvement():
    res = [_run('a', s, 1.0) for s in range(3)] + [_run('b', s, 0.5) for s in range(3)]
    rows = summarize(res, ['a', 'b'], [M], 'a', higher_is_better=False)
    assert rows[1][f'{M}/prob_improvement'] == 1.0 and rows[1][f'{M}/delta'] == -0.5


def test_per_variant_baselines_and_fraction_digits():
    res = [_run('vit', 0, 0.5), _run('deepvit', 0, 0.6), _run('vit24', 0, 0.4),
           _run('deepvit24', 0, 0.45)]
    rows = summarize(res, ['vit', 'deepvit', 'vit24', 'deepvit24'], [M], 'vit',
                     {'deepvit': 'vit', 'vit24': 'vit24', 'deepvit24': 'vit24'})
    by = {r['variant']: r for r in rows}
    assert by['deepvit24']['baseline'] == 'vit24'
    assert by['deepvit24'][f'{M}/delta'] == pytest.approx(0.05)
    md = to_markdown(rows, res, [M], 'vit')
    assert '| deepvit24 | 1/1 | vit24 | 0.450 |' in md  # 3 decimals for fractions, n<2 marked
    assert 'n<2' in md


def test_the_table_states_each_comparisons_question():
    rows = summarize(RESULTS, ['base', 'dk', 'same'], [M], 'base',
                     questions={'dk': 'DropKey vs none', 'base': 'ignored: the baseline'})
    assert [r['question'] for r in rows] == ['', 'DropKey vs none', '']
    md = to_markdown(rows, RESULTS, [M], 'base')
    lines = md.splitlines()
    assert lines[0].startswith('| variant | question | n |')
    assert lines[2].startswith('| base |  | 4/4 |')
    assert lines[3].startswith('| dk | DropKey vs none |')
    assert lines[4].startswith('| same | - | 4/4 |')  # compared, but no question declared
    assert 'question' in summary_columns([M])
    assert '| variant | n |' in to_markdown(summarize(RESULTS, ['base', 'dk'], [M], 'base'),
                                           RESULTS, [M], 'base')  # none declared: no column
