"""DropKey layer ids are unique model-wide (subtrees regularized on their own draw different
masks) and the same in a fresh process (so on resume)."""
import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.engine.hooks import RNGStateHook
from mmvitreg.ops.dropkey import dropkey_modules
from mmvitreg.ops.dropkey.random import reset_context, set_step
from mmvitreg.registry import MODELS
from tests.regularizers.common import TINY_VIT, vit_classifier_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _backbone_plus_model_group():
    """A backbone regularized on its own plus a model-level ``targets=`` group."""
    cfg = vit_classifier_cfg(dropkey=dict(ratio=0.3, schedule='constant',
                                          targets=['backbone.layers.1']))
    cfg['backbone'] = dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                           dropkey=dict(ratio=0.3, schedule='constant', targets=['layers.0']))
    return MODELS.build(cfg)


class _TwoTowers(nn.Module):
    """Two towers, each ``Regularized`` on its own; the outer model is not."""

    def __init__(self):
        super().__init__()
        tower = dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                     dropkey=dict(ratio=0.3, schedule='constant'))
        self.a = MODELS.build(copy.deepcopy(tower))
        self.b = MODELS.build(copy.deepcopy(tower))


def _two_towers():
    model = _TwoTowers()
    RNGStateHook().before_run(SimpleNamespace(model=model))  # what a training run does first
    return model


def _ids(model):
    return [m.layer_id for m in dropkey_modules(model)]


def _masks(model):
    reset_context()
    set_step(3)
    q = torch.zeros(2, 2, 17, 8)
    return [m.train().keep_mask(q, q) for m in dropkey_modules(model)]


def test_backbone_and_model_level_group_draw_different_masks():
    model = _backbone_plus_model_group()
    assert _ids(model) == [0, 1]
    first, second = _masks(model)
    assert not torch.equal(first, second)


def test_two_towers_draw_different_masks():
    model = _two_towers()
    ids = _ids(model)
    assert sorted(ids) == list(range(4)) and ids[:2] == [0, 1]  # tower a keeps its ids
    masks = _masks(model)
    assert not torch.equal(masks[0], masks[2]) and not torch.equal(masks[1], masks[3])


def test_ids_are_the_same_in_a_fresh_process():
    code = ('import json; from tests.regularizers import test_dropkey_layer_ids as t; '
            'print(json.dumps([t._ids(t._backbone_plus_model_group()), '
            't._ids(t._two_towers())]))')
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [_ids(_backbone_plus_model_group()),
                                                        _ids(_two_towers())]
