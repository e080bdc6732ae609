"""``benchmarks/gpu_acceptance.py`` runs with torch + timm only (the GPU machine has no
OpenMMLab): its ``--dry-run`` on CPU, in a fresh process where mmengine, mmcv, mmdet and
mmpretrain cannot be imported, with the Triton variants in Triton's interpreter (so the GPU run
meets no untried code)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dry_run_without_openmmlab(tmp_path):
    out = tmp_path / 'rows.json'
    code = (
        'import runpy, sys\n'
        "for name in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):\n"
        '    sys.modules[name] = None  # importing it raises ImportError, as if not installed\n'
        "sys.argv = ['gpu_acceptance.py', '--dry-run', '--device', 'cpu', '--tile-sweep', "
        f"'--json', {str(out)!r}]\n"
        "runpy.run_path('benchmarks/gpu_acceptance.py', run_name='__main__')\n"
        "print('loaded:', sorted(k for k, m in sys.modules.items() if m is not None and "
        "k.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')))\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', TRITON_INTERPRET='1')
    env.pop('PYTHONPATH', None)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'loaded: []' in res.stdout
    assert 'DropKey GPU acceptance on CPU' in res.stdout
    # each row printed as measured (a run cut short by a time limit still reports), before the
    # table at the end
    live = res.stdout.index('s] op fwd+bwd: tiny b2, N17: host (SDPA): ')
    assert live < res.stdout.index('DropKey GPU acceptance on CPU')
    rows = json.loads(out.read_text())['rows']
    names = [r['name'] for r in rows]
    assert 'flash, no DropKey' in names and 'DropKey fallback (sdpa)' in names
    assert 'DropKey fused (triton)' in names
    ops = [r for r in rows if r['part'] == 'op fwd+bwd']
    triton_ops = [r for r in ops if 'DropKey triton (flash' in r['name']]
    assert len(triton_ops) == 4  # every shape, the padded-and-dropout and the bias ones included
    # fp16 kernel vs its written-out fp32 reference, output and every gradient (bias included)
    assert all(r['max_diff_fused'] is not None and r['max_diff_fused'] < 1e-2 for r in triton_ops)
    # the fp32 row (the dtype the shipped DETR configs train in): float precision
    fp32 = [r for r in triton_ops if r['name'].split(':')[0].endswith('fp32')]
    assert len(fp32) == 1 and fp32[0]['max_diff_fused'] < 1e-5
    per_logit = [r for r in ops if 'one hash per logit' in r['name']]
    assert len(per_logit) == 4 and all(r['max_diff_fused'] == 0 for r in per_logit)
    # the sweep: each shape at the default and the other configurations (CUDA-core fp32
    # products on the fp32 shape only), the same results
    sweep = [r for r in rows if r['part'] == 'tile sweep']
    assert len(sweep) == 5 and sum('(default)' in r['name'] for r in sweep) == 2
    assert [r['name'].endswith('ieee') for r in sweep].count(True) == 1
    assert all(r['ms'] == r['ms'] and r['max_diff_fused'] is not None for r in sweep)
    assert all(r['max_diff_fused'] < 1e-2 for r in sweep)
    assert [r['max_diff_fused'] < 1e-5 for r in sweep if 'fp32' in r['name']] == [True] * 3
    assert all(r['finite'] for r in rows)
    dropped = [r['dropped'] for r in rows if r.get('dropped') is not None]
    assert dropped and all(abs(d - 0.1) < 0.05 for d in dropped)
