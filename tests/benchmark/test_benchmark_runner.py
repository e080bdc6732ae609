"""The benchmark runner's bookkeeping (skip, retry, resume, failures, report) with stand-in
train/test tools that write mmengine-style logs instantly; the real tools are exercised by
tests/tools/test_benchmark_regularizers.py."""
import csv
import json
import os
import os.path as osp
import textwrap

import pytest

from mmvitreg.benchmark import LaunchOptions, load_spec, run_benchmark, select
from mmvitreg.benchmark.runner import run_process

FAKE_TRAIN = '''
import argparse, json, os, os.path as osp, runpy, sys, time
p = argparse.ArgumentParser()
p.add_argument('config'); p.add_argument('--work-dir'); p.add_argument('--resume', action='store_true')
a = p.parse_args()
cfg = runpy.run_path(a.config)  # the dumped run config is plain python
with open(osp.join(osp.dirname(osp.abspath(__file__)), 'calls.txt'), 'a') as f:
    f.write(f'train {osp.relpath(a.work_dir, os.environ["BENCH_ROOT"])} resume={a.resume}\\n')
if 'not_an_argument' in cfg['model']['backbone']:
    print('lots of log lines', flush=True)
    print("error: TypeError: VisionTransformer.__init__() got an unexpected keyword argument "
          "'not_an_argument'  [MMVITREG_DEBUG=1 shows the traceback]", file=sys.stderr)
    sys.exit(1)
seed, drop = cfg['randomness']['seed'], cfg['model']['backbone']['drop_rate']
ts = time.strftime('%Y%m%d_%H%M%S')
os.makedirs(osp.join(a.work_dir, ts, 'vis_data'), exist_ok=True)
with open(osp.join(a.work_dir, ts, 'vis_data', 'scalars.json'), 'w') as f:
    for epoch in (1, 2):
        for it in (1, 2):
            step = 2 * (epoch - 1) + it
            f.write(json.dumps(dict(lr=0.1, loss=2.0 - 0.1 * step + drop, epoch=epoch,
                                    iter=step, step=step, peak_rss_mb=123.0)) + '\\n')
        f.write(json.dumps({'accuracy/top1': 50.0 + 10 * epoch + seed, 'step': epoch}) + '\\n')
open(osp.join(a.work_dir, 'epoch_2.pth'), 'w').write('x')
open(osp.join(a.work_dir, 'last_checkpoint'), 'w').write(osp.join(a.work_dir, 'epoch_2.pth'))
'''

FAKE_TEST = '''
import argparse, json, os, os.path as osp, runpy, time
p = argparse.ArgumentParser()
p.add_argument('config'); p.add_argument('checkpoint'); p.add_argument('--work-dir')
a = p.parse_args()
cfg = runpy.run_path(a.config)
assert osp.isfile(a.checkpoint)
ts = time.strftime('%Y%m%d_%H%M%S')
os.makedirs(osp.join(a.work_dir, ts), exist_ok=True)
acc = 70.0 + cfg['randomness']['seed'] + 10 * cfg['model']['backbone']['drop_rate']
with open(osp.join(a.work_dir, ts, ts + '.json'), 'w') as f:
    json.dump({'accuracy/top1': acc, 'data_time': 0.1, 'time': 0.2}, f)
'''

BASE = """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', drop_rate=0.0))
train_cfg = dict(by_epoch=True, max_epochs=2)
randomness = dict(seed=0)
"""

PRESET = """
base = 'base.py'
seeds = [0, 1]
metrics = ['accuracy/top1']
variants = dict(
    baseline=dict(),
    dropout=dict(cfg_options={'model.backbone.drop_rate': 0.5}),
    broken=dict(cfg_options={'model.backbone.not_an_argument': 1}),
    missing=dict(config='does_not_exist.py'),
)
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    tools = tmp_path / 'tools'
    tools.mkdir()
    (tools / 'train.py').write_text(textwrap.dedent(FAKE_TRAIN))
    (tools / 'test.py').write_text(textwrap.dedent(FAKE_TEST))
    (tmp_path / 'base.py').write_text(BASE)
    (tmp_path / 'preset.py').write_text(PRESET)
    monkeypatch.setenv('BENCH_ROOT', str(tmp_path))
    opts = LaunchOptions(tools_dir=str(tools), poll_s=0.05, progress_every_s=0.0)
    return tmp_path, opts


def _calls(tmp_path):
    path = tmp_path / 'tools' / 'calls.txt'
    return path.read_text().splitlines() if path.exists() else []


def test_sweep_report_skip_retry_and_resume(setup):
    tmp_path, opts = setup
    spec = load_spec(str(tmp_path / 'preset.py'))
    wd = str(tmp_path / 'wd')
    lines = []
    paths = run_benchmark(spec, wd, opts, printer=lines.append, plots=True)
    out = '\n'.join(lines)
    assert '[1/8 baseline seed0]' in out and '[8/8 missing seed1]' in out
    assert 'done in' in out and 'FAILED' in out
    # 3 runnable variants x 2 seeds reach the train tool; the missing config fails before
    assert len(_calls(tmp_path)) == 6

    with open(paths['summary_csv']) as f:
        summary = {r['variant']: r for r in csv.DictReader(f)}
    assert summary['baseline']['status'] == 'ok'
    assert float(summary['baseline']['accuracy/top1/mean']) == pytest.approx(70.5)
    assert float(summary['baseline']['accuracy/top1/std']) == pytest.approx(0.5 ** 0.5)
    assert float(summary['dropout']['accuracy/top1/mean']) == pytest.approx(75.5)
    assert float(summary['dropout']['accuracy/top1/delta']) == pytest.approx(5.0)
    assert float(summary['dropout']['accuracy/top1/rel_gain_pct']) == pytest.approx(500 / 70.5)
    assert summary['broken']['status'] == 'failed'
    assert "unexpected keyword argument 'not_an_argument'" in summary['broken']['errors']
    assert 'config: ' in summary['missing']['errors']
    assert 'does_not_exist.py' in summary['missing']['errors']
    md = paths['markdown']
    assert '| dropout | 2/2 | 75.50 ± 0.71 | +5.00 (+7.1%) |' in md
    assert osp.getsize(paths['metrics_plot']) > 1000 and osp.getsize(paths['curves_plot']) > 1000
    with open(paths['runs_csv']) as f:
        runs = list(csv.DictReader(f))
    assert [(r['variant'], r['seed']) for r in runs][:4] == [
        ('baseline', '0'), ('baseline', '1'), ('dropout', '0'), ('dropout', '1')]
    assert float(runs[0]['peak_rss_mb']) > 0 and float(runs[0]['wall_s']) > 0
    result = json.load(open(osp.join(wd, 'dropout', 'seed1', 'result.json')))
    assert result['metrics']['accuracy/top1'] == pytest.approx(76.0)

    # rerun: finished runs are skipped, failed ones retried (unless told not to)
    lines.clear()
    run_benchmark(spec, wd, opts, retry_failed=False, printer=lines.append, plots=False)
    assert len(_calls(tmp_path)) == 6
    # (config errors are cheap and re-checked every time, so a fixed preset is picked up)
    assert sum('skipped' in ln for ln in lines) == 6
    assert sum('FAILED (config)' in ln for ln in lines) == 2
    run_benchmark(spec, wd, opts, printer=lines.append, plots=False)
    assert len(_calls(tmp_path)) == 8 and _calls(tmp_path)[-1].startswith('train wd/broken')

    # a changed variant invalidates its finished runs
    spec.variant('dropout').cfg_options['model.backbone.drop_rate'] = 0.2
    sub = select(spec, ['dropout'], [0])
    lines.clear()
    run_benchmark(sub, wd, opts, printer=lines.append, plots=False,
                  all_variants=['baseline', 'dropout', 'broken', 'missing'])
    assert 'config changed' in '\n'.join(lines)
    assert _calls(tmp_path)[-1] == 'train wd/dropout/seed0 resume=False'

    # an interrupted run (started, checkpoint written, no result) resumes
    os.remove(osp.join(wd, 'baseline', 'seed1', 'result.json'))
    lines.clear()
    paths = run_benchmark(select(spec, ['baseline'], [1]), wd, opts, printer=lines.append,
                          plots=False, all_variants=['baseline', 'dropout'])
    assert _calls(tmp_path)[-1] == 'train wd/baseline/seed1 resume=True'
    # the report of a partial rerun still lists the other variants' results on disk
    assert '| dropout | 1/1 |' in paths['markdown']


def test_run_process_timeout_and_rss(tmp_path):
    import sys
    rc, wall, rss, timed_out = run_process(
        [sys.executable, '-c', 'import time; print("hi", flush=True); time.sleep(30)'],
        str(tmp_path / 'log.txt'), timeout=1.0, poll_s=0.05)
    assert timed_out and rc == 124 and wall < 20
    assert 'hi' in (tmp_path / 'log.txt').read_text()
    rc, wall, rss, timed_out = run_process(
        [sys.executable, '-c', 'x = bytearray(200 * 1024 * 1024); x[::4096] = b"1" * len(x[::4096])'],
        str(tmp_path / 'log2.txt'), poll_s=0.05)
    assert rc == 0 and not timed_out and rss > 200


def test_launch_options_validation():
    with pytest.raises(ValueError, match="launcher must be 'none', 'pytorch' or 'slurm'"):
        LaunchOptions(launcher='mpi')
    with pytest.raises(ValueError, match='needs --partition'):
        LaunchOptions(launcher='slurm')
