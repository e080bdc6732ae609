"""tools/dist_train.sh + dist_test.sh with 2 gloo processes on CPU (both ranks train, the
checkpoint is evaluated), and which Python the dist_*/slurm_* launchers use."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

from tests._helpers import DIGITS_CONFIG, REPO, TINY_DIGITS_OPTIONS

VENV_PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
# this interpreter is the project's .venv one: run the launchers as a user would, without
# PYTHON= and with no other Python on PATH (they must find .venv themselves)
IN_PROJECT_VENV = osp.isfile(VENV_PYTHON) and osp.samefile(
    osp.dirname(sys.executable), osp.dirname(VENV_PYTHON))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launcher_env() -> dict:
    env = dict(os.environ, PORT=str(_free_port()), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if IN_PROJECT_VENV:
        env.pop('PYTHON', None)
        env.pop('VIRTUAL_ENV', None)
        env['PATH'] = '/usr/bin:/bin'
    else:
        env['PYTHON'] = sys.executable
    return env


def run_dist_train(config: str, work_dir: str, nprocs: int = 2, cfg_options=(),
                   timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, str(nprocs), '--work-dir',
           work_dir]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    return subprocess.run(cmd, cwd=REPO, env=_launcher_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_dist_train_then_dist_test_two_gloo_processes(tmp_path):
    work = str(tmp_path)
    config = tmp_path / 'ddp_digits.py'
    config.write_text(f'''_base_ = {DIGITS_CONFIG!r}
custom_imports = dict(imports=['mmvitreg', 'tests._helpers.rank_marker_hook'])
custom_hooks = [dict(type='RankMarkerHook')]
''')
    res = run_dist_train(str(config), work, cfg_options=[
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *TINY_DIGITS_OPTIONS])
    assert res.returncode == 0, res.stderr[-4000:]
    log = res.stdout + res.stderr
    assert 'Distributed training: True' in log
    # 64 images, batch 16 per process, 2 processes -> 2 iterations on each rank
    for rank in (0, 1):
        with open(osp.join(work, f'rank{rank}.txt')) as f:
            world_size, iters = map(int, f.read().split())
        assert world_size == 2 and iters == 2
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)

    # the checkpoint it wrote, evaluated by 2 processes with the default (safe) loader
    res = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_test.sh'), DIGITS_CONFIG, ckpt, '2', '--work-dir',
         str(tmp_path / 'test'), '--cfg-options', *TINY_DIGITS_OPTIONS],
        cwd=REPO, env=_launcher_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    out = res.stdout + res.stderr
    assert 'Distributed training: True' in out and 'accuracy/top1' in out


@pytest.mark.parametrize('script, args', [
    ('slurm_train.sh', ['part', 'job', 'CFG.py', 'WORK']),
    ('slurm_test.sh', ['part', 'job', 'CFG.py', 'CKPT.pth']),
])
def test_slurm_launchers_use_the_project_python(tmp_path, script, args):
    """With a stand-in ``srun`` that prints its command: .venv's Python when it exists, and an
    explicit PYTHON= still wins."""
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'srun').write_text('#!/bin/sh\necho "SRUN $*"\n')
    (fake / 'srun').chmod(0o755)
    env = dict(os.environ, PATH=f'{fake}:/usr/bin:/bin')
    env.pop('PYTHON', None)
    cmd = ['bash', osp.join(REPO, 'tools', script), *args, '--cfg-options', 'a=1']
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith('SRUN '))
    tool = 'train.py' if 'train' in script else 'test.py'
    expected = VENV_PYTHON if osp.isfile(VENV_PYTHON) else 'python'
    assert f' {expected} -u {osp.join(REPO, "tools", tool)} CFG.py' in line, line
    assert '--launcher=slurm --cfg-options a=1' in line
    env['PYTHON'] = '/opt/other/python'
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert ' /opt/other/python -u ' in out
