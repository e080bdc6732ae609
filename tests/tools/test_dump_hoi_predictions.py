"""tools/analysis_tools/dump_hoi_predictions.py reads a received prediction pickle safely: a real
``tools/test.py --out`` dump (tensors, numpy values) converts, a crafted one is refused in one line
without running code (run as the user runs it, in a subprocess)."""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'dump_hoi_predictions.py')


class _SystemCall:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _record(name: str = 'a.jpg', **extra) -> dict:
    pred = dict(sub_bboxes=torch.rand(2, 4), obj_bboxes=torch.rand(2, 4),
                obj_labels=torch.tensor([0, 3]), verb_labels=np.array([1, 2]),
                scores=torch.tensor([0.9, 0.1]))
    return dict(img_path=f'/data/{name}', ori_shape=(4, 5), scale=np.float32(1), pred_hoi=pred,
                **extra)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    env.pop('MMVITREG_TRUST_CHECKPOINTS', None)
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_dump_converts(tmp_path, protocol):
    # protocol 2 is what mmengine's dump (tools/test.py --out) writes: numpy arrays pickle their
    # bytes through _codecs.encode(text, 'latin1'); protocol 5 through numpy's _frombuffer
    pkl, out = str(tmp_path / 'p.pkl'), str(tmp_path / 'p.json')
    with open(pkl, 'wb') as f:
        pickle.dump([_record()], f, protocol=protocol)
    res = _run(pkl, out)
    assert res.returncode == 0, res.stderr
    entry = json.load(open(out))[0]
    assert entry['file_name'] == 'a.jpg' and len(entry['hoi_prediction']) == 2


def test_crafted_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / 'code_ran'
    pkl, out = str(tmp_path / 'p.pkl'), str(tmp_path / 'p.json')
    with open(pkl, 'wb') as f:
        pickle.dump([_record(x=_SystemCall(f'touch {marker}'))], f)
    res = _run(pkl, out)
    assert res.returncode != 0
    assert 'refusing to unpickle' in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not osp.exists(out)


class _OtherCodec:
    def __reduce__(self):
        import _codecs
        return _codecs.encode, ('x', 'rot13')


def test_codecs_other_than_latin1_are_refused(tmp_path):
    pkl, out = str(tmp_path / 'p.pkl'), str(tmp_path / 'p.json')
    with open(pkl, 'wb') as f:
        pickle.dump([_record(x=_OtherCodec())], f, protocol=2)
    res = _run(pkl, out)
    assert res.returncode != 0 and 'rot13' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
