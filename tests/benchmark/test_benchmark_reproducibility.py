"""The same benchmark command gives the same numbers whatever ``--jobs`` is: real worker runs
(mmengine Runner) of a small digits preset, once one at a time and once two at a time."""
import csv
import glob
import json
import os
import os.path as osp
import textwrap

import pytest

from mmvitreg.benchmark.cli import main
from tests._helpers import DIGITS_CONFIG, REPO

# 320 images / batch 32 = 10 iterations per epoch, 2 epochs, validation (the result) at the end:
# on main, 1 vs 2 threads first changed a logged loss around iteration 14
PRESET = f"""
_base_ = [{DIGITS_CONFIG!r}]
train_dataloader = dict(dataset=dict(num_samples=320))
val_dataloader = dict(dataset=dict(num_samples=64))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, save_best=None))
benchmark = dict(
    seeds=[0],
    metrics=['accuracy/top1'],
    test=False,
    variants=dict(
        baseline=dict(),
        dropkey=dict(cfg_options={{'model.backbone.type': 'Regularized',
                                   'model.backbone.host': 'VisionTransformer',
                                   'model.backbone.dropkey': dict(ratio=0.1,
                                                                  schedule='decrease')}}),
    ))
"""


def _losses(run_dir):
    (path, ) = glob.glob(osp.join(run_dir, '2*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line)['loss'] for line in f if '"loss"' in line]


def _scores(wd):
    with open(osp.join(wd, 'summary.csv')) as f:
        return {r['variant']: {k: v for k, v in r.items() if k.startswith('accuracy/top1')}
                for r in csv.DictReader(f)}


# four real runs (~1 min on 2 busy cores); the fast check of the same is
# test_benchmark_runner.py::test_thread_count_does_not_follow_jobs_and_other_runtimes_are_not_reused
@pytest.mark.slow
def test_jobs_1_and_jobs_2_give_identical_runs_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('PYTHONPATH', REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    preset = tmp_path / 'preset.py'
    preset.write_text(textwrap.dedent(PRESET))
    outs = {}
    for jobs in (1, 2):
        main([str(preset), '--work-dir', str(tmp_path / f'jobs{jobs}'), '--jobs', str(jobs),
              '--no-plots'])
        outs[jobs] = capsys.readouterr().out
    one, two = str(tmp_path / 'jobs1'), str(tmp_path / 'jobs2')
    for variant in ('baseline', 'dropkey'):
        run1, run2 = osp.join(one, variant, 'seed0'), osp.join(two, variant, 'seed0')
        assert len(_losses(run1)) == 20
        assert _losses(run1) == _losses(run2)  # every logged loss, bit for bit
        res1, res2 = (json.load(open(osp.join(r, 'result.json'))) for r in (run1, run2))
        assert res1['status'] == res2['status'] == 'ok'
        assert res1['metrics'] == res2['metrics']
        assert res1['fingerprint'] == res2['fingerprint']
        assert res1['runtime'] == res2['runtime'] and res1['runtime']['threads'] == 1
    assert _scores(one) == _scores(two)
    # the table says where the runs ran
    assert 'Every run: cpu, 1 thread, torch ' in outs[1] and 'Every run: cpu, 1 thread' in outs[2]
