"""Stand-in for ``python -m mmvitreg.benchmark.worker`` in the benchmark tests: takes the
same arguments, writes mmengine-style logs, a checkpoint and test results at once, and records
each call (with its environment; a second line when it ends) in ``$BENCH_CALLS``. The test
metric is 70 + seed + 10 * drop_rate.

``$FAKE_SLOW``: a run whose work dir contains it writes its checkpoint, then sleeps (to be
interrupted). ``$FAKE_SLEEP``: seconds every run takes (so parallel runs overlap).
``$FAKE_IMMORTAL``: clear the parent-death signal, so the run outlives a killed tool."""
import argparse
import json
import os
import os.path as osp
import runpy
import sys
import time

p = argparse.ArgumentParser()
p.add_argument('config')
p.add_argument('--work-dir')
p.add_argument('--resume', action='store_true')
p.add_argument('--test')
p.add_argument('--launcher', default='none')
a = p.parse_args()
if os.environ.get('FAKE_IMMORTAL'):
    import ctypes
    import ctypes.util
    ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').prctl(1, 0, 0, 0, 0)
cfg = runpy.run_path(a.config)  # the dumped run config is plain python
vis = [b['type'] for b in (cfg.get('visualizer') or {}).get('vis_backends', [])]
call = dict(work_dir=a.work_dir, resume=a.resume, test=a.test, start=time.time(),
            omp=os.environ.get('OMP_NUM_THREADS'),
            mkl=os.environ.get('MKL_NUM_THREADS'), cuda=os.environ.get('CUDA_VISIBLE_DEVICES'),
            vis=vis, pid=os.getpid())
with open(os.environ['BENCH_CALLS'], 'a') as f:
    f.write(json.dumps(call) + '\n')
backbone = cfg['model']['backbone']
if 'not_an_argument' in backbone:
    print("error: TypeError: VisionTransformer.__init__() got an unexpected keyword argument "
          "'not_an_argument'  [MMVITREG_DEBUG=1 shows the traceback]", file=sys.stderr)
    sys.exit(1)
seed, drop = cfg['randomness']['seed'], backbone.get('drop_rate', 0.0)
ts = time.strftime('%Y%m%d_%H%M%S')
os.makedirs(osp.join(a.work_dir, ts, 'vis_data'), exist_ok=True)
with open(osp.join(a.work_dir, ts, 'vis_data', 'scalars.json'), 'w') as f:
    for epoch in (1, 2):
        for it in (1, 2):
            step = 2 * (epoch - 1) + it
            f.write(json.dumps(dict(lr=0.1, loss=2.0 - 0.1 * step + drop, epoch=epoch,
                                    iter=step, step=step, peak_rss_mb=123.0)) + '\n')
        f.write(json.dumps({'accuracy/top1': 50.0 + 10 * epoch + seed, 'step': epoch}) + '\n')
open(osp.join(a.work_dir, 'epoch_2.pth'), 'w').write('x')
open(osp.join(a.work_dir, 'last_checkpoint'), 'w').write(osp.join(a.work_dir, 'epoch_2.pth'))
if os.environ.get('FAKE_SLOW') and os.environ['FAKE_SLOW'] in a.work_dir:
    time.sleep(300)
time.sleep(float(os.environ.get('FAKE_SLEEP', '0')))
if a.test:
    print('[benchmark] testing epoch_2.pth', flush=True)
    tdir = osp.join(a.work_dir, 'test', ts)
    os.makedirs(tdir, exist_ok=True)
    with open(osp.join(tdir, ts + '.json'), 'w') as f:
        json.dump({'accuracy/top1': 70.0 + seed + 10 * drop, 'data_time': 0.1}, f)
with open(os.environ['BENCH_CALLS'], 'a') as f:
    f.write(json.dumps(dict(end=time.time(), pid=os.getpid())) + '\n')
