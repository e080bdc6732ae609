"""tools/benchmark_regularizers.py end to end: real worker runs (mmengine Runner, train + test),
two at a time, the table with paired statistics, the outputs, and a rerun that runs nothing."""
import csv
import glob
import json
import os
import os.path as osp
import textwrap

import pytest

from tests._helpers import DIGITS_CONFIG, run_tool

TOOL = 'tools/benchmark_regularizers.py'
M = 'accuracy/top1'

PRESET = f"""
_base_ = [{DIGITS_CONFIG!r}]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                     feedforward_channels=64)),
             head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(num_samples=48))
val_dataloader = dict(batch_size=32, dataset=dict(num_samples=32))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, save_best=None))
benchmark = dict(
    seeds=[0, 1],
    metrics=['accuracy/top1'],
    variants=dict(
        baseline=dict(),
        dropkey=dict(cfg_options={{'model.backbone.type': 'Regularized',
                                   'model.backbone.host': 'VisionTransformer',
                                   'model.backbone.dropkey': dict(ratio=0.3,
                                                                  schedule='constant')}}),
        broken=dict(cfg_options={{'model.backbone.not_an_argument': 1}}),
    ))
"""


@pytest.fixture
def preset(tmp_path):
    (tmp_path / 'preset.py').write_text(textwrap.dedent(PRESET))
    return str(tmp_path / 'preset.py')


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# the acceptance test: real runs through the worker module (~2 min on 2 cores), kept in CI
def test_sweep_table_csv_plots_and_rerun(preset, tmp_path):
    wd = str(tmp_path / 'bench')
    proc = run_tool([TOOL, preset, '--work-dir', wd, '--jobs', '2'],
                    env={'OMP_NUM_THREADS': '1'}, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout
    assert '2/3 variants x 2 seeds' not in out and '3 variants x 2 seeds = 6 runs' in out
    summary = {r['variant']: r for r in _csv(osp.join(wd, 'summary.csv'))}
    assert list(summary) == ['baseline', 'dropkey', 'broken']
    runs = _csv(osp.join(wd, 'runs.csv'))
    assert [(r['variant'], r['seed'], r['status']) for r in runs] == [
        ('baseline', '0', 'ok'), ('baseline', '1', 'ok'), ('dropkey', '0', 'ok'),
        ('dropkey', '1', 'ok'), ('broken', '0', 'failed'), ('broken', '1', 'failed')]
    values = {}
    for r in runs[:4]:
        run_dir = osp.join(wd, r['variant'], f"seed{r['seed']}")
        # the metric in the table is the one the test stage of this very run logged
        (test_json, ) = [p for p in glob.glob(osp.join(run_dir, 'test', '2*', '2*.json'))
                         if osp.basename(p)[:-5] == osp.basename(osp.dirname(p))]
        logged = json.load(open(test_json))[M]
        assert float(r[M]) == pytest.approx(logged, abs=1e-4)
        values.setdefault(r['variant'], {})[int(r['seed'])] = logged
        cfg_text = open(osp.join(run_dir, 'config.py')).read()
        assert f"seed={r['seed']}" in cfg_text.replace(' ', '')
        assert ("'Regularized'" in cfg_text) == (r['variant'] == 'dropkey')
        assert '[benchmark] testing epoch_1.pth' in open(osp.join(run_dir, 'run.log')).read()
        assert float(r['peak_rss_mb']) > 100 and float(r['wall_s']) > 0
    # paired by seed
    diffs = [values['dropkey'][s] - values['baseline'][s] for s in (0, 1)]
    assert float(summary['dropkey'][f'{M}/delta']) == pytest.approx(sum(diffs) / 2, abs=1e-4)
    assert summary['dropkey'][f'{M}/n_pairs'] == '2'
    assert summary['broken']['status'] == 'failed'
    assert "train: TypeError" in summary['broken']['errors']
    assert "unexpected keyword argument 'not_an_argument'" in summary['broken']['errors']
    md = open(osp.join(wd, 'results.md')).read()
    assert md in out and 'n = 2 seeds per variant' in md and 'ttest_rel' in md
    for name in ('forest.png', 'metrics.png', 'curves.png'):
        with open(osp.join(wd, name), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'

    logs_before = {p: os.path.getmtime(p) for p in glob.glob(osp.join(wd, '*', '*', 'run.log'))}
    proc = run_tool([TOOL, preset, '--work-dir', wd, '--no-retry-failed'],
                    env={'OMP_NUM_THREADS': '1'}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('finished earlier (ok), skipped') == 4
    assert proc.stdout.count('finished earlier (failed), skipped') == 2
    assert {p: os.path.getmtime(p) for p in logs_before} == logs_before
    assert _csv(osp.join(wd, 'runs.csv')) == runs


def test_dry_run_and_one_line_errors(preset, tmp_path, capsys):
    from mmvitreg.benchmark.cli import main
    main([preset, '--work-dir', str(tmp_path / 'w'), '--dry-run', '--variants', 'dropkey',
          '--repeats', '3'])
    out = capsys.readouterr().out
    assert '1 variants x 3 seeds = 3 runs' in out
    assert 'dropkey/seed2' in out and 'to run' in out
    with pytest.raises(SystemExit) as exit_info:
        main([preset, '--variants', 'nope', '--dry-run'])
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: KeyError: unknown variant 'nope'")
    with pytest.raises(SystemExit):
        main([DIGITS_CONFIG, '--dry-run'])
    assert 'is not a benchmark preset' in capsys.readouterr().err
