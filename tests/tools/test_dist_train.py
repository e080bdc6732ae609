"""tools/dist_train.sh with 2 gloo processes on CPU: completes and both ranks train."""
import os
import os.path as osp
import socket
import subprocess
import sys

from tests._helpers import DIGITS_CONFIG, REPO, TINY_DIGITS_OPTIONS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_dist_train(config: str, work_dir: str, nprocs: int = 2, cfg_options=(),
                   timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, str(nprocs), '--work-dir',
           work_dir]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dist_train_two_gloo_processes(tmp_path):
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
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
