"""tools/dist_train.sh runs the tiny QPIC config with 2 gloo processes (CPU DDP), with DropKey
and DRLoc switched on from the command line as a user would."""
import os
import os.path as osp
import socket
import subprocess
import sys

from mmvitreg.testing.hico import make_hico_dataset

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_gloo_processes(tmp_path):
    data = str(tmp_path / 'hico')
    make_hico_dataset(data, num_train=8, num_test=2)
    work = str(tmp_path / 'work')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, '2', '--work-dir', work,
           '--no-validate', '--cfg-options', f'train_dataloader.dataset.dataset.data_root={data}',
           'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
           'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2',
           'model.type=Regularized', 'model.host=QPIC', 'model.dropkey.ratio=0.2',
           'model.drloc.source=backbone', 'model.drloc.num_pairs=8', 'model.drloc.loss_weight=0.1']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'Iter(train) [2/2]' in out and 'loss_verb_cls' in out and 'loss_drloc' in out
    assert 'DropKey' in out and 'DRLoc' in out  # the build's table of what was switched on
    assert 'Distributed training: True' in out, out[-3000:]
    assert 'GPU number: 2' in out, out[-3000:]  # mmengine's name for the world size
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
