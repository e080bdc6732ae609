"""The benchmark runner's bookkeeping (parallel slots, exactly-once, locks, skip, retry, resume,
failures, tracking backends, report) with a stand-in worker that writes mmengine-style logs
instantly; the real worker is exercised by tests/tools/test_benchmark_regularizers.py."""
import csv
import json
import os
import os.path as osp
import sys
import textwrap
import threading

import pytest

from mmvitreg.benchmark import (LaunchOptions, execute_all, load_spec, make_slots, plan_runs,
                                select, write_report)
from mmvitreg.benchmark.launch import Slot, run_process, worker_command
from tests._helpers import BENCHMARK_BASE_CONFIG as BASE
from tests._helpers import FAKE_WORKER as FAKE

PRESET = """
_base_ = ['base.py']
benchmark = dict(
    seeds=[0, 1, 2],
    metrics=['accuracy/top1'],
    variants=dict(
        baseline=dict(),
        dropout=dict(cfg_options={'model.backbone.drop_rate': 0.5}),
        broken=dict(cfg_options={'model.backbone.not_an_argument': 1}),
        missing=dict(config='does_not_exist.py'),
    ))
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / 'base.py').write_text(BASE)
    (tmp_path / 'preset.py').write_text(textwrap.dedent(PRESET))
    calls = tmp_path / 'calls.jsonl'
    monkeypatch.setenv('BENCH_CALLS', str(calls))
    opts = LaunchOptions(jobs=2, cpus=2, devices=[], worker=[sys.executable, FAKE], poll_s=0.02,
                         progress_every_s=0.0)
    return tmp_path, opts


def calls_of(tmp_path):
    """One record per worker call, in start order, with ``end`` once it finished."""
    path = tmp_path / 'calls.jsonl'
    records = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    ends = {r['pid']: r['end'] for r in records if 'end' in r}
    return [dict(r, end=ends.get(r['pid'])) for r in records if 'start' in r]


def _sweep(spec, wd, opts, **kw):
    lines = []
    items = [(spec, r) for r in plan_runs(spec, wd)]
    counts = execute_all(items, opts, printer=lines.append,
                         on_done=lambda s, res: write_report(s, wd, plots=False), **kw)
    return counts, '\n'.join(lines)


def test_jobs2_sweep_runs_each_run_once_in_parallel_and_reports(setup, monkeypatch):
    tmp_path, opts = setup
    monkeypatch.setenv('FAKE_SLEEP', '0.5')
    spec = load_spec(str(tmp_path / 'preset.py'))
    wd = str(tmp_path / 'wd')
    counts, out = _sweep(spec, wd, opts)
    assert counts == dict(ok=6, failed=6, skipped=0)
    calls = calls_of(tmp_path)
    # 3 runnable variants x 3 seeds reach the worker (the missing config fails before), once each
    ran = sorted(osp.relpath(c['work_dir'], wd) for c in calls)
    assert ran == sorted(f'{v}/seed{s}' for v in ('baseline', 'dropout', 'broken')
                         for s in range(3))
    # two at a time, each with one of the two cores
    assert {c['omp'] for c in calls} == {'1'}
    done = [c for c in calls if c['end'] is not None]
    assert len(done) == 6
    overlaps = [(a, b) for a in done for b in done
                if a is not b and a['start'] < b['end'] and b['start'] < a['end']]
    assert overlaps, 'runs never overlapped'
    for a in done:  # never more than two at once
        assert sum(b['start'] <= a['start'] < b['end'] for b in done) <= 2

    paths = write_report(spec, wd, plots=True)
    with open(paths['summary_csv']) as f:
        summary = {r['variant']: r for r in csv.DictReader(f)}
    # baseline 70, 71, 72; dropout 75, 76, 77: paired diffs all +5
    assert float(summary['baseline']['accuracy/top1/mean']) == pytest.approx(71.0)
    assert float(summary['dropout']['accuracy/top1/delta']) == pytest.approx(5.0)
    assert float(summary['dropout']['accuracy/top1/prob_improvement']) == 1.0
    # a constant +5 on 3 seeds: exact permutation test, p = 2/8 (not 0 and '**')
    assert float(summary['dropout']['accuracy/top1/p_value']) == pytest.approx(0.25)
    assert summary['dropout']['accuracy/top1/test'] == 'exact'
    assert summary['dropout']['accuracy/top1/sig'] == 'n.s.'
    assert summary['broken']['status'] == 'failed'
    assert "unexpected keyword argument 'not_an_argument'" in summary['broken']['errors']
    assert summary['broken']['errors'].startswith('seeds 0 1 2: train: TypeError')
    assert 'config: ' in summary['missing']['errors']
    for key in ('forest_plot', 'metrics_plot', 'curves_plot'):
        with open(paths[key], 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    result = json.load(open(osp.join(wd, 'dropout', 'seed1', 'result.json')))
    assert result['metrics']['accuracy/top1'] == pytest.approx(76.0)
    assert result['slot'] == 'cpu x1'

    # rerun: finished runs are skipped, failed ones retried only when asked
    counts, out = _sweep(spec, wd, opts, retry_failed=False)
    # (config errors are cheap and checked again every time, so a fixed preset is picked up)
    assert len(calls_of(tmp_path)) == 9 and counts['skipped'] == 9 and counts['failed'] == 3
    _sweep(spec, wd, opts)
    again = [osp.relpath(c['work_dir'], wd) for c in calls_of(tmp_path)[9:]]
    assert sorted(again) == ['broken/seed0', 'broken/seed1', 'broken/seed2']


def test_two_sweeps_sharing_a_work_dir_never_run_a_run_twice(setup, monkeypatch):
    tmp_path, opts = setup
    monkeypatch.setenv('FAKE_SLEEP', '0.3')
    spec = select(load_spec(str(tmp_path / 'preset.py')), ['baseline', 'dropout'])
    wd = str(tmp_path / 'wd')
    one = LaunchOptions(jobs=1, cpus=1, devices=[], worker=opts.worker, poll_s=0.02)
    outs = []
    threads = [threading.Thread(target=lambda: outs.append(_sweep(spec, wd, one)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [osp.relpath(c['work_dir'], wd) for c in calls_of(tmp_path)]
    assert sorted(ran) == sorted(f'{v}/seed{s}' for v in ('baseline', 'dropout')
                                 for s in range(3))  # each exactly once
    # whatever one sweep did not run, the other ran or found finished/busy
    assert sum(o[0]['ok'] for o in outs) == 6


def test_resume_changed_config_and_vis_backend(setup):
    tmp_path, opts = setup
    spec = select(load_spec(str(tmp_path / 'preset.py')), ['baseline'], [0, 1])
    wd = str(tmp_path / 'wd')
    _sweep(spec, wd, opts)
    # an interrupted run (started, checkpoint written, no result) resumes from its checkpoint
    os.remove(osp.join(wd, 'baseline', 'seed1', 'result.json'))
    counts, out = _sweep(spec, wd, opts)
    assert 'resuming the interrupted run' in out and counts['skipped'] == 1
    assert calls_of(tmp_path)[-1]['resume'] is True
    # a changed variant invalidates its finished runs
    spec.variant('baseline').cfg_options['model.backbone.drop_rate'] = 0.2
    counts, out = _sweep(select(spec, seeds=[0]), wd, opts)
    assert 'config changed' in out and calls_of(tmp_path)[-1]['resume'] is False
    # tracking backends are forwarded to every run but do not make finished runs stale
    vis = LaunchOptions(jobs=1, devices=[], worker=opts.worker, poll_s=0.02,
                        vis_backends=['tensorboard', 'wandb'])
    n = len(calls_of(tmp_path))
    counts, _ = _sweep(select(spec, seeds=[0, 2]), wd, vis)
    assert counts == dict(ok=1, failed=0, skipped=1) and len(calls_of(tmp_path)) == n + 1
    assert calls_of(tmp_path)[-1]['vis'] == ['LocalVisBackend', 'TensorboardVisBackend',
                                             'WandbVisBackend']
    text = open(osp.join(wd, 'baseline', 'seed2', 'config.py')).read()
    assert "project='mmvitreg-benchmark-preset'" in text and "name='baseline/seed2'" in text


def test_thread_count_does_not_follow_jobs_and_other_runtimes_are_not_reused(setup, capsys):
    """A run's thread count is fixed (not cores / --jobs), and a finished run made with another
    thread count or on another device is not reused: its fingerprint differs."""
    tmp_path, opts = setup
    spec = select(load_spec(str(tmp_path / 'preset.py')), ['baseline', 'dropout'], [0])
    wd = str(tmp_path / 'wd')
    one = LaunchOptions(jobs=1, cpus=2, devices=[], worker=opts.worker, poll_s=0.02)
    assert _sweep(spec, wd, one)[0] == dict(ok=2, failed=0, skipped=0)
    # --jobs 2 on the same 2 cores: the same 1 thread per run, so the runs are reused
    assert _sweep(spec, wd, opts)[0] == dict(ok=0, failed=0, skipped=2)
    assert [(c['omp'], c['mkl']) for c in calls_of(tmp_path)] == [('1', '1')] * 2
    md = open(osp.join(wd, 'results.md')).read()
    assert md.splitlines()[2].startswith('Every run: cpu, 1 thread, torch ')
    # another thread count: both run again, with it
    two = LaunchOptions(jobs=2, devices=[], worker=opts.worker, poll_s=0.02, threads_per_run=2)
    counts, out = _sweep(spec, wd, two)
    assert counts == dict(ok=2, failed=0, skipped=0)
    assert 'ran on cpu, 1 thread, torch' in out and 'now cpu, 2 threads, torch' in out
    assert [c['omp'] for c in calls_of(tmp_path)[2:]] == ['2', '2']
    assert json.load(open(osp.join(wd, 'baseline', 'seed0', 'result.json')))['runtime'][
        'threads'] == 2
    # the dry run says the same, here for the GPU a run now gets
    from mmvitreg.benchmark.runner import run_status
    gpu = make_slots(LaunchOptions(devices=['0'], worker=opts.worker))[0].runtime
    assert gpu['device'] == 'cuda' and len(gpu['gpus']) == 1
    status = run_status(spec, plan_runs(spec, wd)[0], runtime=gpu)
    assert status.startswith('ran on cpu, 2 threads') and status.endswith('will run again')
    # another device: runs again there; a report mixing environments says so
    cuda = LaunchOptions(devices=['0'], worker=opts.worker, poll_s=0.02)
    assert _sweep(select(spec, ['dropout']), wd, cuda)[0] == dict(ok=1, failed=0, skipped=0)
    assert calls_of(tmp_path)[-1]['cuda'] == '0'
    md = write_report(spec, wd, plots=False)['markdown']
    assert 'Warning: the runs come from 2 environments' in md and '1 x ' in md


def test_gpu_slots_and_torchrun_command(setup, monkeypatch):
    tmp_path, opts = setup
    slots = make_slots(LaunchOptions(jobs=2, gpus_per_run=2, devices=['0', '1', '2', '3'],
                                     cpus=16))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in slots] == ['0,1', '2,3']
    assert [s.nproc for s in slots] == [2, 2] and slots[0].env['OMP_NUM_THREADS'] == '4'
    with pytest.raises(ValueError, match='--jobs 3 x --gpus-per-run 2 needs 6 GPUs, but 4'):
        make_slots(LaunchOptions(jobs=3, gpus_per_run=2, devices=['0', '1', '2', '3']))
    with pytest.raises(ValueError, match='needs CUDA devices'):
        make_slots(LaunchOptions(gpus_per_run=2, devices=[]))
    cmd = worker_command('c.py', 'w', LaunchOptions(devices=[]), Slot(0, {}, 2), True, 'last')
    assert cmd[1:4] == ['-m', 'torch.distributed.run', '--nproc_per_node=2']
    assert cmd[5:] == ['-m', 'mmvitreg.benchmark.worker', 'c.py', '--work-dir', 'w',
                       '--resume', '--test', 'last', '--launcher', 'pytorch']
    # a GPU sweep: every run sees exactly its own device
    monkeypatch.setenv('FAKE_SLEEP', '0.3')
    spec = select(load_spec(str(tmp_path / 'preset.py')), ['baseline', 'dropout'], [0, 1])
    gpu = LaunchOptions(jobs=2, devices=['3', '5'], worker=opts.worker, poll_s=0.02)
    _sweep(spec, str(tmp_path / 'wd'), gpu)
    calls = sorted(calls_of(tmp_path), key=lambda c: c['start'])
    assert {c['cuda'] for c in calls} == {'3', '5'}
    for a in calls:  # two runs that overlap in time never share a device
        for b in calls:
            if a is not b and a['start'] < b['end'] and b['start'] < a['end']:
                assert a['cuda'] != b['cuda']


def test_run_process_timeout_and_rss(tmp_path):
    rc, wall, rss, timed_out = run_process(
        [sys.executable, '-c', 'import time; print("hi", flush=True); time.sleep(30)'],
        str(tmp_path / 'log.txt'), timeout=1.0, poll_s=0.05)
    assert timed_out and rc == 124
    assert 'hi' in (tmp_path / 'log.txt').read_text()
    rc, wall, rss, timed_out = run_process(
        [sys.executable, '-c',
         'x = bytearray(200 * 1024 * 1024); x[::4096] = b"1" * len(x[::4096])'],
        str(tmp_path / 'log2.txt'), poll_s=0.05)
    assert rc == 0 and not timed_out and rss > 200


def test_launch_options_validation():
    with pytest.raises(ValueError, match='--jobs must be an integer >= 1, got 0'):
        LaunchOptions(jobs=0)
    with pytest.raises(ValueError, match='--vis-backend must be one of'):
        LaunchOptions(vis_backends=['neptune'])
    with pytest.raises(ValueError, match='--threads-per-run must be an integer >= 1, got 0'):
        LaunchOptions(threads_per_run=0)
