"""GPU plans as documented: each run keeps its preset's total batch and LR on any
``--gpus-per-run`` (or scales the LR with mmengine's ``auto_scale_lr``), ``--dry-run`` prints the
GPU-hours and disk of the plan, and a slurm array task runs one run on its own GPUs and exits
non-zero when that run fails. GPUs are faked through ``CUDA_VISIBLE_DEVICES`` (what
:func:`mmvitreg.benchmark.launch.visible_devices` counts), runs go to the stand-in worker."""
import json
import os
import stat
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from mmvitreg.benchmark.cli import main
from tests._helpers import BENCHMARK_BASE_CONFIG as BASE
from tests._helpers import FAKE_WORKER as FAKE
from tests._helpers import REPO

# a 1xb128 recipe (CIFAR-100 ViT-S/4) and, as a variant, a 4xb256 one (ImageNet DeiT-S)
PRESET = """
_base_ = ['base.py']
train_dataloader = dict(batch_size=128)
auto_scale_lr = dict(base_batch_size=128)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
benchmark = dict(
    seeds=[0],
    metrics=['accuracy/top1'],
    variants=dict(
        cifar=dict(),
        in1k=dict(cfg_options={'train_dataloader.batch_size': 256,
                               'auto_scale_lr.base_batch_size': 1024}),
        broken=dict(cfg_options={'model.backbone.not_an_argument': 1}),
    ))
"""
EIGHT_GPUS = ','.join(map(str, range(8)))


@pytest.fixture
def preset(tmp_path, monkeypatch):
    (tmp_path / 'base.py').write_text(BASE)
    (tmp_path / 'preset.py').write_text(textwrap.dedent(PRESET))
    monkeypatch.setenv('BENCH_CALLS', str(tmp_path / 'calls.jsonl'))
    monkeypatch.setenv('MMVITREG_BENCHMARK_WORKER', f'{sys.executable} {FAKE}')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', EIGHT_GPUS)  # 8 fake GPUs
    monkeypatch.setenv('PYTHONPATH', REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    monkeypatch.chdir(REPO)
    return tmp_path


def _effective_lr(cfg: Config, world_size: int) -> float:
    """The LR mmengine's Runner trains with: ``Runner.scale_lr`` on the run's config."""
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                          lr=cfg.optim_wrapper.optimizer.lr)
    runner = SimpleNamespace(_train_dataloader=cfg.train_dataloader, world_size=world_size,
                             param_schedulers=None, logger=SimpleNamespace(info=print))
    Runner.scale_lr(runner, OptimWrapper(opt), cfg.get('auto_scale_lr'))
    return opt.param_groups[0]['lr']


@pytest.mark.parametrize('gpus', [1, 2, 8])
def test_each_run_keeps_the_presets_total_batch_and_lr(preset, capsys, gpus):
    wd = preset / f'wd{gpus}'
    main([str(preset / 'preset.py'), '--work-dir', str(wd), '--variants', 'cifar', 'in1k',
          '--gpus-per-run', str(gpus), '--no-plots'])
    out = capsys.readouterr().out
    assert f'per-GPU batch = total / {gpus} (--gpus-per-run)' in out
    assert 'batch policy keep-total' in open(wd / 'results.md').read().lower()
    for variant, total in (('cifar', 128), ('in1k', 1024)):
        cfg = Config.fromfile(str(wd / variant / 'seed0' / 'config.py'),
                              import_custom_modules=False)
        assert cfg.train_dataloader.batch_size == total // gpus
        assert cfg.optim_wrapper.optimizer.lr == 1e-3
        assert _effective_lr(cfg, gpus) == pytest.approx(1e-3)
        result = json.load(open(wd / variant / 'seed0' / 'result.json'))
        assert result['status'] == 'ok' and result['batch'] == dict(
            processes=gpus, per_gpu=total // gpus, total=total, lr=1e-3, lr_scale=1.0)


def test_scale_lr_policy_and_a_batch_that_does_not_split(preset, capsys):
    wd = preset / 'wd'
    main([str(preset / 'preset.py'), '--work-dir', str(wd), '--variants', 'cifar', 'in1k',
          '--gpus-per-run', '8', '--batch-policy', 'scale-lr', '--no-plots'])
    assert 'batch policy scale-lr' in capsys.readouterr().out
    for variant, per_gpu, lr in (('cifar', 128, 8e-3), ('in1k', 256, 2e-3)):
        cfg = Config.fromfile(str(wd / variant / 'seed0' / 'config.py'),
                              import_custom_modules=False)
        assert cfg.train_dataloader.batch_size == per_gpu
        assert cfg.auto_scale_lr.enable is True
        assert _effective_lr(cfg, 8) == pytest.approx(lr)
    # keep-total on 3 GPUs: 128 does not split; refused up front in one line, nothing runs
    n_calls = len((preset / 'calls.jsonl').read_text().splitlines())
    with pytest.raises(SystemExit) as exit_info:
        main([str(preset / 'preset.py'), '--work-dir', str(preset / 'wd3'), '--gpus-per-run',
              '3', '--jobs', '2'])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: BatchError: cifar: total batch 128 '
                                               '(auto_scale_lr.base_batch_size) does not split '
                                               'over --gpus-per-run 3')
    assert len((preset / 'calls.jsonl').read_text().splitlines()) == n_calls


ESTIMATED = """
_base_ = ['base.py']
train_cfg = dict(by_epoch=True, max_epochs=4)
val_dataloader = dict(batch_size=1)
val_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, save_best='auto'))
benchmark = dict(
    seeds=[0, 1, 2],
    metrics=['accuracy/top1'],
    resources=dict(gpu_hours_per_epoch=0.5, checkpoint_gb=2.0, source='measured on site X'),
    variants=dict(baseline=dict(), short=dict(cfg_options={'train_cfg.max_epochs': 2})))
"""


def test_dry_run_prints_gpu_hours_and_disk(preset, capsys):
    (preset / 'est.py').write_text(textwrap.dedent(ESTIMATED))
    args = [str(preset / 'est.py'), '--work-dir', str(preset / 'w'), '--dry-run']
    main(args + ['--gpus-per-run', '2'])
    out = capsys.readouterr().out
    # 3 x 4 x 0.5 + 3 x 2 x 0.5 GPU-hours; each run keeps its last checkpoint + the best one
    assert '6 runs x 4/2 epochs x 0.5 GPU-h = 9.0 GPU-hours' in out
    assert '6 x 2 checkpoints x 2 GB = 24.0 GB' in out and 'source: measured on site X' in out
    assert 'total: 9.0 GPU-hours (about 4.5 h on 1 x 2 GPUs), 24.0 GB of checkpoints' in out
    assert not (preset / 'calls.jsonl').exists()  # nothing ran
    # the last 3 (baseline: 3 of 4 epochs, short: both) + best
    main(args + ['--keep-checkpoints', '3'])
    assert ', 42.0 GB of checkpoints' in capsys.readouterr().out
    # the preset's own retention (every epoch): 4 + 1 and 2 + 1 per run
    main(args + ['--keep-checkpoints', 'all'])
    assert '6 x 5/3 checkpoints x 2 GB = 48.0 GB' in capsys.readouterr().out
    # a preset without resources says so
    main([str(preset / 'preset.py'), '--work-dir', str(preset / 'w2'), '--dry-run'])
    assert 'GPU-hours and disk not estimated (no benchmark.resources in preset.py)' in \
        capsys.readouterr().out


FAKE_SBATCH = """#!/bin/sh
for a; do last=$a; done
cp "$last" "$SBATCH_DIR/"
echo "$@" >> "$SBATCH_DIR/calls"
echo 4242
"""


def test_slurm_array_task_runs_one_run_on_its_gpus_and_fails_when_it_fails(preset, monkeypatch,
                                                                           capsys):
    bin_dir, captured = preset / 'bin', preset / 'sbatch'
    bin_dir.mkdir()
    captured.mkdir()
    sbatch = bin_dir / 'sbatch'
    sbatch.write_text(FAKE_SBATCH)
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('SBATCH_DIR', str(captured))
    main([str(preset / 'preset.py'), '--work-dir', str(preset / 'wd'), '--variants', 'cifar',
          'broken', '--slurm', 'gpu', '--jobs', '2', '--gpus-per-run', '8', '--submit'])
    assert 'submitted job array 4242' in capsys.readouterr().out
    calls = (captured / 'calls').read_text().splitlines()
    assert calls[0].startswith('--parsable') and calls[1].startswith('--dependency=afterany:4242')
    script = (captured / 'array.sbatch').read_text()
    # one run (8 GPUs) per array task, at most 2 tasks at once
    assert '#SBATCH --array=0-1%2\n' in script and '#SBATCH --gres=gpu:8\n' in script
    command = script.rstrip().splitlines()[-1]
    assert '--jobs' not in command and '--gpus-per-run 8' in command
    # an array task on a node with the 8 GPUs slurm gave it: the plan's run 0 (cifar) trains on
    # all of them and the task exits 0; run 1 (broken) fails and so does its task
    tasks = {}
    for index in (0, 1):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(index), CUDA_VISIBLE_DEVICES=EIGHT_GPUS)
        tasks[index] = subprocess.run(['bash', str(captured / 'array.sbatch')], env=env,
                                      capture_output=True, text=True, timeout=300)
    assert tasks[0].returncode == 0, tasks[0].stderr[-2000:]
    assert tasks[1].returncode == 1, tasks[1].stderr[-2000:]
    assert tasks[1].stderr.strip().splitlines()[-1].startswith(
        'error: run broken/seed0 failed: train: ')
    log = (preset / 'wd' / 'cifar' / 'seed0' / 'run.log').read_text()
    assert '--nproc_per_node=8' in log.splitlines()[0]
    cudas = {json.loads(ln).get('cuda') for ln in (preset / 'calls.jsonl').read_text().splitlines()
             if 'start' in ln}
    assert cudas == {EIGHT_GPUS}
    assert json.load(open(preset / 'wd' / 'broken' / 'seed0' / 'result.json'))['status'] == \
        'failed'


def test_fingerprint_holds_the_fitted_batch_and_the_runtime(preset, capsys, monkeypatch):
    """#23 items 1 and 5 together: a run records its fitted batch and its runtime, its
    fingerprint covers both, and --dry-run shows each run's batch next to what a rerun with the
    given GPUs and batch policy would do (judged on the config alone where the GPUs are not
    here)."""
    from mmvitreg.benchmark import LaunchOptions, load_spec, make_slots, plan_runs, select
    from mmvitreg.benchmark.runner import run_config
    from mmvitreg.benchmark.spec import config_fingerprint
    wd = preset / 'wd'
    args = [str(preset / 'preset.py'), '--work-dir', str(wd), '--variants', 'cifar']
    main(args + ['--gpus-per-run', '2', '--no-plots'])
    result = json.load(open(wd / 'cifar' / 'seed0' / 'result.json'))
    assert result['status'] == 'ok' and result['batch']['per_gpu'] == 64
    runtime = result['runtime']
    assert runtime['device'] == 'cuda' and len(runtime['gpus']) == 2
    opts = LaunchOptions(gpus_per_run=2, devices=['0', '1'])
    assert make_slots(opts)[0].runtime == runtime
    spec = select(load_spec(str(preset / 'preset.py')), ['cifar'])
    cfg = run_config(spec, plan_runs(spec, str(wd))[0], opts)[0]
    assert result['fingerprint'] == config_fingerprint(cfg, runtime)
    assert result['fingerprint'] != config_fingerprint(cfg)
    capsys.readouterr()

    def dry(*more):
        main(args + ['--dry-run', *more])
        lines = capsys.readouterr().out.splitlines()
        return [ln for ln in lines if ln.startswith('each run: ')][0], lines[-1]

    where, run = dry('--gpus-per-run', '2')
    assert where == f"each run: 2 x cuda, torch {runtime['torch']}"
    assert run.split() == ['cifar/seed0', '2', 'x', '64', '=', '128,', 'lr', '0.001', 'ok']
    # other GPUs: the batch and the runtime change
    _, run = dry('--gpus-per-run', '4')
    assert '4 x 32 = 128' in run and run.endswith(
        f"ran on 2 x cuda, torch {runtime['torch']}, now 4 x cuda, torch {runtime['torch']}: "
        'will run again')
    # same GPUs, another batch policy: only the config changes
    _, run = dry('--gpus-per-run', '2', '--batch-policy', 'scale-lr')
    assert '2 x 128 = 256' in run
    assert run.endswith('config changed since the recorded run: will run again')
    # planned for GPUs that are not here (a login node, or slurm): the config alone decides
    for more, text in ((['--slurm', 'gpu'], 'a slurm task of partition gpu'), ([], '2 GPUs')):
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '' if not more else EIGHT_GPUS)
        where, run = dry('--gpus-per-run', '2', *more)
        assert where.startswith(f'each run: {text} (models and torch not known here)')
        assert run.endswith(' ok')
