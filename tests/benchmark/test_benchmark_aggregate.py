import csv
import io
import math

import pytest

from mmvitreg.benchmark.aggregate import (format_mean_std, mean_std, run_columns, summarize,
                                          summary_columns, to_csv, to_markdown)

M = 'accuracy/top1'


def _run(variant, seed, acc=None, status='ok', error='', wall=10.0, rss=100.0):
    return dict(variant=variant, seed=seed, status=status,
                metrics={} if acc is None else {M: acc}, error=error, wall_s=wall,
                peak_rss_mb=rss, peak_cuda_mb=None)


RUNS = [
    _run('baseline', 0, 80.0, wall=10, rss=100), _run('baseline', 1, 82.0, wall=12, rss=120),
    _run('dropkey', 0, 84.0, wall=20, rss=130), _run('dropkey', 1, 85.0, wall=22, rss=90),
    _run('dropkey', 2, 86.0, wall=24, rss=95),
    _run('broken', 0, status='failed', error='train: TypeError: bad'),
    _run('broken', 1, status='failed', error='train: TypeError: bad'),
    _run('half', 0, 70.0), _run('half', 1, status='failed', error='timed out after 5 s'),
]


def test_mean_std_is_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))  # ddof=1, not the population std
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


def test_summarize_mean_std_gain_and_status():
    rows = {r['variant']: r for r in summarize(RUNS, ['baseline', 'dropkey', 'broken', 'half',
                                                      'never'], [M], 'baseline')}
    base, dk = rows['baseline'], rows['dropkey']
    assert base[f'{M}/mean'] == pytest.approx(81.0)
    assert base[f'{M}/std'] == pytest.approx(math.sqrt(2.0))
    assert base[f'{M}/delta'] == 0.0
    assert dk[f'{M}/mean'] == pytest.approx(85.0) and dk[f'{M}/n'] == 3
    assert dk[f'{M}/delta'] == pytest.approx(4.0)
    assert dk[f'{M}/rel_gain_pct'] == pytest.approx(100 * 4.0 / 81.0)
    assert dk['wall_s'] == pytest.approx(22.0) and dk['peak_rss_mb'] == 130.0
    assert dk['seeds'] == '0 1 2' and dk['status'] == 'ok'
    assert rows['broken']['status'] == 'failed' and rows['broken']['runs_ok'] == 0
    # identical errors of several seeds are reported once
    assert rows['broken']['errors'] == 'seeds 0 1: train: TypeError: bad'
    assert math.isnan(rows['broken'][f'{M}/mean']) and math.isnan(rows['broken'][f'{M}/delta'])
    assert rows['half']['status'] == 'partial' and rows['half'][f'{M}/n'] == 1
    assert 'seed 1: timed out' in rows['half']['errors']
    assert rows['never']['status'] == 'not run' and rows['never']['runs_total'] == 0


def test_summarize_without_baseline_has_no_gain():
    rows = summarize(RUNS, ['dropkey'], [M], baseline=None)
    assert math.isnan(rows[0][f'{M}/delta'])


def test_csv_round_trip_and_empty_nan_cells():
    rows = summarize(RUNS, ['baseline', 'broken'], [M], 'baseline')
    text = to_csv(rows, summary_columns([M]))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r['variant'] for r in parsed] == ['baseline', 'broken']
    assert float(parsed[0][f'{M}/mean']) == pytest.approx(81.0)
    assert parsed[1][f'{M}/mean'] == '' and parsed[1]['status'] == 'failed'
    flat = [dict(r, **{M: r['metrics'].get(M)}) for r in RUNS]
    runs = list(csv.DictReader(io.StringIO(to_csv(flat, run_columns([M])))))
    assert len(runs) == len(RUNS) and runs[2][M] == '84.0'


def test_markdown_table_contents():
    rows = summarize(RUNS, ['baseline', 'dropkey', 'broken'], [M], 'baseline')
    md = to_markdown(rows, RUNS[:7], [M], 'baseline', title='t')
    lines = md.splitlines()
    assert lines[0] == '## t'
    dk = next(ln for ln in lines if ln.startswith('| dropkey | 3/3'))
    assert '85.00 ± 1.00' in dk and '+4.00 (+4.9%)' in dk
    assert '| baseline | 2/2 | 81.00 ± 1.41 | (baseline) |' in md
    assert 'failed: seeds 0 1: train: TypeError: bad' in md
    # per-run table: one line per run
    assert sum(ln.startswith('| dropkey | ') for ln in lines) == 1 + 3


def test_markdown_uses_three_decimals_for_fractions():
    runs = [dict(variant='a', seed=0, status='ok', metrics={'coco/bbox_mAP': 0.1234})]
    rows = summarize(runs, ['a'], ['coco/bbox_mAP'], 'a')
    assert '0.123' in to_markdown(rows, runs, ['coco/bbox_mAP'], 'a')
    assert format_mean_std(float('nan'), 1.0) == '-'
    assert format_mean_std(1.0, float('nan')) == '1.00'


def test_per_variant_baselines():
    runs = [_run('vit', 0, 60.0), _run('vit_drloc', 0, 66.0), _run('swin', 0, 50.0),
            _run('swin_drloc', 0, 65.0)]
    names = ['vit', 'vit_drloc', 'swin', 'swin_drloc']
    rows = {r['variant']: r for r in summarize(
        runs, names, [M], 'vit', {'swin': 'swin', 'swin_drloc': 'swin'})}
    assert rows['vit_drloc'][f'{M}/delta'] == pytest.approx(6.0)
    assert rows['swin_drloc'][f'{M}/delta'] == pytest.approx(15.0)
    assert rows['swin_drloc']['baseline'] == 'swin' and rows['vit_drloc']['baseline'] == 'vit'
    md = to_markdown(list(rows.values()), runs, [M], 'vit')
    assert '| variant | runs | baseline |' in md  # the reference of each row is shown
    assert '| swin | 1/1 | swin | 50.00 | (baseline) |' in md
    assert '| swin_drloc | 1/1 | swin | 65.00 | +15.00 (+30.0%) |' in md
