"""Suites: one cross-task table whose rows each ask one question on every task (a row whose
tasks ask different questions is refused); a half-finished suite, interrupted with Ctrl-C,
continues where it stopped (finished runs never run again, the interrupted one resumes); slurm
job arrays."""
import json
import math
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from scipy import stats as st

from mmvitreg.benchmark import load_suite
from mmvitreg.benchmark.slurm import write_sbatch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAKE = osp.join(osp.dirname(osp.abspath(__file__)), '_fake_worker.py')
BASE = """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', drop_rate=0.0))
train_cfg = dict(by_epoch=True, max_epochs=2)
randomness = dict(seed=0)
"""
PRESET_A = """
_base_ = ['base.py']
benchmark = dict(metrics=['accuracy/top1'], variants=dict(
    baseline=dict(), dk=dict(cfg_options={'model.backbone.drop_rate': 0.3},
                             question='drop rate vs none')))
"""
PRESET_B = """
_base_ = ['base.py']
benchmark = dict(metrics=['accuracy/top1'], baseline='stock', variants=dict(
    stock=dict(),
    dropkey=dict(cfg_options={'model.backbone.drop_rate': -0.2},
                 question=dict(stock='drop rate vs none', extra='drop rate vs extra')),
    extra=dict(question='extra vs none')))
"""
SUITE = """
suite = dict(
    variants=['baseline', 'dk'],
    seeds=[0, 1, 2],
    tasks=dict(
        a=dict(preset='a.py'),
        b=dict(preset='b.py', variants=dict(baseline='stock', dk='dropkey')),
    ))
"""


@pytest.fixture
def suite_dir(tmp_path):
    for name, text in (('base.py', BASE), ('a.py', PRESET_A), ('b.py', PRESET_B),
                       ('suite.py', SUITE)):
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def _env(tmp_path, **extra):
    env = dict(os.environ, BENCH_CALLS=str(tmp_path / 'calls.jsonl'), OMP_NUM_THREADS='1',
               MMVITREG_BENCHMARK_WORKER=f'{sys.executable} {FAKE}',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env.update(extra)
    return env


def _calls(tmp_path):
    path = tmp_path / 'calls.jsonl'
    lines = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    return [c for c in lines if 'start' in c]


def test_load_suite_maps_variants_per_task(suite_dir):
    suite = load_suite(str(suite_dir / 'suite.py'))
    assert suite.baseline == 'baseline' and [t.name for t in suite.tasks] == ['a', 'b']
    b = suite.tasks[1].spec
    assert [v.name for v in b.variants] == ['baseline', 'dk'] and b.baseline == 'baseline'
    assert b.variant('dk').cfg_options == {'model.backbone.drop_rate': -0.2}
    assert b.seeds == [0, 1, 2]
    (suite_dir / 'bad.py').write_text("suite = dict(variants=['base'], tasks=dict(a=dict("
                                      "preset='a.py')))")
    with pytest.raises(ValueError, match="has no variant for the baseline 'base'"):
        load_suite(str(suite_dir / 'bad.py'))


def test_interrupted_suite_resumes_and_writes_one_table(suite_dir):
    wd = suite_dir / 'wd'
    cmd = [sys.executable, '-m', 'mmvitreg.benchmark', str(suite_dir / 'suite.py'),
           '--work-dir', str(wd), '--jobs', '2']
    slow = osp.join('b', 'dk', 'seed2')  # the last run of the plan hangs until interrupted
    proc = subprocess.Popen(cmd, env=_env(suite_dir, FAKE_SLOW=slow), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = [wd / t / v / f'seed{s}' / 'result.json' for t in 'ab' for v in ('baseline', 'dk')
               for s in range(3)]
    deadline = time.time() + 240
    while time.time() < deadline and not (
            sum(p.exists() for p in results) == 11 and (wd / slow / 'last_checkpoint').exists()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert 'interrupted: rerun the same command' in out
    assert not (wd / slow / 'result.json').exists()
    first = _calls(suite_dir)
    assert len(first) == 12

    proc = subprocess.run(cmd, env=_env(suite_dir), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _calls(suite_dir)
    assert len(calls) == 13  # only the interrupted run ran again, resuming its checkpoint
    assert calls[-1]['work_dir'].endswith(slow) and calls[-1]['resume'] is True
    assert proc.stdout.count('finished earlier (ok), skipped') == 11
    # the cross-task table: task a: dk - baseline = +3 on every seed; task b: -2 on every seed
    rows = json.load(open(wd / 'suite.json'))['rows']
    assert [r['variant'] for r in rows] == ['dk']
    (dk,) = rows
    # P(improve) over all pairs of runs: a: 73-75 vs 70-72, every pair won; b: 68-70 vs 70-72,
    # one tie (70 = 70) in 9 pairs
    assert dk['a/delta'] == pytest.approx(3.0) and dk['a/prob_improvement'] == 1.0
    assert dk['b/delta'] == pytest.approx(-2.0)
    assert dk['b/prob_improvement'] == pytest.approx(
        st.mannwhitneyu([68, 69, 70], [70, 71, 72]).statistic / 9) == pytest.approx(0.5 / 9)
    # constant differences on 3 seeds: exact test, p = 2/8 each, Holm over the 2 cells: 0.5;
    # no zero-width CI (the old table printed [+3.00, +3.00] ** from p = 0)
    assert dk['a/test'] == 'exact' and dk['a/p_value'] == pytest.approx(0.25)
    assert dk['a/p_holm'] == pytest.approx(0.5) and dk['b/p_holm'] == pytest.approx(0.5)
    assert dk['a/sig'] == 'n.s.' and dk['a/n'] == 3 and math.isnan(dk['a/ci_low'])
    assert dk['pi_mean'] == pytest.approx((1 + 0.5 / 9) / 2) and dk['pi_tasks'] == 2
    assert dk['pi_ci_low'] <= dk['pi_mean'] <= dk['pi_ci_high']
    # score scale: baseline std 1 on both tasks: normalised differences +3 x 3 and -2 x 3
    assert dk['a/norm_delta'] == pytest.approx(3.0) and dk['b/norm_delta'] == pytest.approx(-2.0)
    assert dk['score_iqm'] == pytest.approx(st.trim_mean([3, 3, 3, -2, -2, -2], 0.25))
    assert dk['score_mean'] == pytest.approx(0.5) and dk['score_tasks'] == 2
    md = open(wd / 'suite.md').read()
    # the question title, then where the runs ran (#23 item 1)
    assert md.startswith('## Suite suite asks: drop rate vs none\n\nEvery run: cpu, 1 thread, ')
    assert '| drop rate vs none | dk vs baseline | +3.00 n.s.† (n=3) | -2.00 n.s.† (n=3) | 0.53 [' \
        in md
    assert "Holm's (1979)" in md and 'over the table\'s 2 (comparison, task) p-values' in md
    assert md in proc.stdout
    preset_md = open(wd / 'a' / 'results.md').read().splitlines()
    assert preset_md[2].startswith('Every run: cpu, 1 thread, ')  # under the title
    assert 'question' in preset_md[4]  # the preset's table
    with open(wd / 'suite_forest.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    for task in 'ab':  # each task also has its own report
        assert (wd / task / 'results.md').exists() and (wd / task / 'forest.png').exists()


def test_slurm_array_scripts(suite_dir, monkeypatch):
    from mmvitreg.benchmark.cli import main
    paths = write_sbatch(str(suite_dir / 'w'), 'bench-x', 12, ['python', '-m',
                         'mmvitreg.benchmark', 'suite.py', '--work-dir', 'w'], 'gpu',
                         gpus_per_run=8, max_parallel=4, extra=['--time=48:00:00'])
    array = open(paths['array']).read()
    assert '#SBATCH --array=0-11%4' in array and '#SBATCH --gres=gpu:8' in array
    assert '#SBATCH --partition=gpu' in array and '#SBATCH --time=48:00:00' in array
    assert array.rstrip().endswith('--work-dir w --run-index "$SLURM_ARRAY_TASK_ID"')
    report = open(paths['report']).read()
    assert report.rstrip().endswith('--work-dir w --report-only') and '--array' not in report
    # through the command line (in this process; runs still go to the fake worker process):
    # the plan size and the same arguments, minus the slurm ones
    for key, value in _env(suite_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    main([str(suite_dir / 'suite.py'), '--work-dir', str(suite_dir / 'w2'), '--seeds', '0', '1',
          '--slurm', 'p1', '--gpus-per-run', '2', '--slurm-args=--account=me'])
    array = open(suite_dir / 'w2' / 'slurm' / 'array.sbatch').read()
    assert '#SBATCH --array=0-7\n' in array and '#SBATCH --account=me' in array
    assert '--seeds 0 1 --gpus-per-run 2 --run-index' in array and '--slurm' not in array
    assert not _calls(suite_dir)  # nothing ran
    # one array task = one run of the plan, with the sweep's bookkeeping
    main([str(suite_dir / 'suite.py'), '--work-dir', str(suite_dir / 'w2'), '--seeds', '0', '1',
          '--run-index', '5'])
    (call,) = _calls(suite_dir)
    # plan order is seed-major: seed 0 of a/baseline, a/dk, b/baseline, b/dk, then seed 1 ...
    assert call['work_dir'] == str(suite_dir / 'w2' / 'a' / 'dk' / 'seed1')


def test_uninformative_tasks_are_flagged_and_left_out_of_the_aggregate(suite_dir, monkeypatch):
    """A task whose runs all score 0 (the old mini detection/HOI presets) or whose variant run
    failed says so in the table and does not enter the aggregate as P(improve) = 0.5."""
    import mmvitreg.benchmark.suite as suite_mod
    suite = load_suite(str(suite_dir / 'suite.py'))
    scores = {'a': {'baseline': [70, 71, 72], 'dk': [73, 74, 75]},  # dk better on every seed
              'b': {'baseline': [0, 0, 0], 'dk': [0, 0, 0]}}        # nothing learnt
    monkeypatch.setattr(suite_mod, 'collect_results', lambda spec, wd: (None, [
        dict(variant=v, seed=s, status='ok', metrics={'accuracy/top1': x})
        for v, xs in scores[osp.basename(wd)].items() for s, x in enumerate(xs)]))
    (row,) = suite_mod.suite_table(suite, str(suite_dir / 'wd'))
    assert row['a/flag'] == '' and row['b/flag'] == 'every run scores 0'
    assert row['pi_tasks'] == 1 and row['pi_mean'] == 1.0  # not (1.0 + 0.5) / 2
    # the score scale leaves it out too: a alone, +3 / baseline std 1
    assert row['score_tasks'] == 1 and row['score_iqm'] == pytest.approx(3.0)
    assert row['score_mean'] == pytest.approx(3.0)

    scores['b'] = {'baseline': [60, 61, 62], 'dk': [64, 65, 66]}
    (row,) = suite_mod.suite_table(suite, str(suite_dir / 'wd'))
    assert row['b/flag'] == '' and row['pi_tasks'] == 2
    assert row['score_tasks'] == 2 and row['b/norm_delta'] == pytest.approx(4.0)
    assert row['score_iqm'] == pytest.approx(st.trim_mean([3, 3, 3, 4, 4, 4], 0.25))
    assert row['score_mean'] == pytest.approx(3.5)
    # Holm over the table's two cells (both constant differences: exact p = 1/4)
    assert row['a/p_holm'] == pytest.approx(0.5) and row['b/p_holm'] == pytest.approx(0.5)
    # a constant baseline has no std: on the probability scale, not on the score scale
    scores['b'] = {'baseline': [60, 60, 60], 'dk': [61, 63, 62]}
    (row,) = suite_mod.suite_table(suite, str(suite_dir / 'wd'))
    assert row['b/flag'] == '' and row['pi_tasks'] == 2 and row['score_tasks'] == 1
    assert math.isnan(row['b/norm_delta']) and row['b/test'] == 't'
    scores['b'] = {'baseline': [60, 61, 62], 'dk': [64, 65, 66]}
    scores['b']['dk'] = [64, float('nan'), 66]  # a failed run
    (row,) = suite_mod.suite_table(suite, str(suite_dir / 'wd'))
    assert row['b/flag'] == 'failed or missing runs (seeds [1])' and row['pi_tasks'] == 1
    md = suite_mod.write_suite_report(suite, str(suite_dir / 'wd'), plots=False)['markdown']
    assert '[left out: uninformative]' in md and 'b: dk vs baseline: failed or missing runs' in md


def test_a_row_asks_one_question_on_every_task(suite_dir):
    """The DETR problem of suite_dropkey_gpu: one task's `dk` answers another question than the
    other's (DropKey + attention dropout vs attention dropout, not vs no regularizer): refused in
    one line naming both questions, as is a comparison whose preset declares no question."""
    b = (suite_dir / 'b.py').read_text()
    (suite_dir / 'b.py').write_text(b.replace("stock='drop rate vs none'",
                                              "stock='drop rate + dropout vs dropout'"))
    with pytest.raises(ValueError) as err:
        load_suite(str(suite_dir / 'suite.py'))
    msg = str(err.value)
    assert '\n' not in msg and "dk vs baseline asks 'drop rate vs none'" in msg
    assert "on b it asks 'drop rate + dropout vs dropout'" in msg
    (suite_dir / 'b.py').write_text(b.replace("stock='drop rate vs none', ", ''))
    with pytest.raises(ValueError, match=r"task 'b': .*b\.py declares no question for dropkey "
                       r'vs stock; add question=\.\.\. to its variant \'dropkey\''):
        load_suite(str(suite_dir / 'suite.py'))
    (suite_dir / 'b.py').write_text(b)  # a declared question the presets do not ask: refused
    (suite_dir / 'q.py').write_text(SUITE.replace(
        "seeds=[0, 1, 2],", "seeds=[0, 1, 2], comparisons=[dict(variant='dk', "
        "question='DropKey vs no attention regularizer')],"))
    with pytest.raises(ValueError, match="asks 'DropKey vs no attention regularizer', but on a "
                       "it asks 'drop rate vs none', b it asks 'drop rate vs none'"):
        load_suite(str(suite_dir / 'q.py'))


def test_rows_by_comparison_with_their_own_reference(suite_dir, monkeypatch):
    """Rows are comparisons, each with its question: `dk vs other` exists on task b only (n/a on
    a) and aggregates b alone; the questions come from the presets, renamed to the suite's
    variants."""
    import mmvitreg.benchmark.suite as suite_mod
    (suite_dir / 'two.py').write_text(textwrap.dedent("""
        suite = dict(
            variants=['baseline', 'dk', 'other'],
            seeds=[0, 1, 2],
            comparisons=[dict(variant='dk'),
                         dict(variant='dk', baseline='other', question='drop rate vs extra')],
            tasks=dict(
                a=dict(preset='a.py'),
                b=dict(preset='b.py', variants=dict(baseline='stock', dk='dropkey',
                                                    other='extra')),
            ))
        """))
    suite = load_suite(str(suite_dir / 'two.py'))
    assert [(c.label, c.question) for c in suite.comparisons] == [
        ('dk vs baseline', 'drop rate vs none'), ('dk vs other', 'drop rate vs extra')]
    assert suite.questions == ['drop rate vs none', 'drop rate vs extra']
    b = suite.tasks[1]
    assert b.sources == dict(baseline='stock', dk='dropkey', other='extra')
    assert b.spec.variant('dk').questions == dict(baseline='drop rate vs none',
                                                  other='drop rate vs extra')
    scores = {'a': {'baseline': [70, 71, 72], 'dk': [73, 74, 75]},
              'b': {'baseline': [60, 61, 62], 'dk': [64, 65, 66], 'other': [67, 68, 69]}}
    monkeypatch.setattr(suite_mod, 'collect_results', lambda spec, wd: (None, [
        dict(variant=v, seed=s, status='ok', metrics={'accuracy/top1': x})
        for v, xs in scores[osp.basename(wd)].items() for s, x in enumerate(xs)]))
    none, extra = suite_mod.suite_table(suite, str(suite_dir / 'wd'))
    assert none['question'] == 'drop rate vs none' and none['pi_tasks'] == 2
    assert extra['comparison'] == 'dk vs other' and extra['baseline'] == 'other'
    assert extra['a/asked'] is False and extra['a/n'] == 0 and extra['a/flag'] == ''
    assert extra['b/delta'] == pytest.approx(-3.0) and extra['pi_tasks'] == 1
    assert extra['pi_mean'] == 0.0  # b alone: every run of dk below every run of other
    md = suite_mod.write_suite_report(suite, str(suite_dir / 'wd'), plots=False)['markdown']
    assert '| drop rate vs extra | dk vs other | n/a | -3.00 ' in md
    assert '3 (comparison, task) p-values' in md
