"""digits://NAME checkpoints: trained once on first use, cached, the same weights in every
process whatever its thread count or random state, loaded through mmengine's init_cfg."""
import copy
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mmvitreg.models.digit_pretrained as dp

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# a small recipe: the same code path as the shipped ones, a few seconds to train
TINY = dict(backbone=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8,
                          num_stages=1, out_indices=(0, ), strides=(1, ), dilations=(1, ),
                          norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
            scope='mmdet', crop_size=32, digit_height=(9, 28), num_crops=96, iters=6,
            batch_size=16, lr=2e-3, weight_decay=0.05, seed=0)


def _use_recipe(monkeypatch, tmp_path, name: str, recipe: dict):
    """Register ``recipe`` as ``digits://name``, cached under ``tmp_path``."""
    monkeypatch.setitem(dp.DIGIT_PRETRAINED, name, recipe)
    monkeypatch.setenv('MMVITREG_CACHE', str(tmp_path / 'cache'))
    return tmp_path


def _trained_in_another_process(tmp_path, function: str, name: str, recipe: dict) -> dict:
    """``dp.<function>(name)`` in a fresh process with 2 threads and other torch and numpy
    seeds than any caller here: what a separate benchmark run computes."""
    out = tmp_path / f'{name}-other.pt'
    script = textwrap.dedent(f"""
        import numpy as np, torch
        import mmvitreg.models.digit_pretrained as dp
        dp.DIGIT_PRETRAINED[{name!r}] = {recipe!r}
        torch.set_num_threads(2)
        torch.manual_seed(123)
        np.random.seed(123)
        torch.save(dp.{function}({name!r}), {str(out)!r})
        """)
    subprocess.run([sys.executable, '-c', script], check=True, cwd=REPO, timeout=600)
    return torch.load(out, weights_only=True)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return _use_recipe(monkeypatch, tmp_path, 'tiny', TINY)


def test_first_use_trains_and_caches_then_reads_the_cache(tiny):
    from mmengine.runner import CheckpointLoader
    path = dp.digit_pretrained_path('tiny')
    assert not osp.exists(path)
    before = torch.random.get_rng_state()
    ckpt = CheckpointLoader.load_checkpoint('digits://tiny', map_location='cpu')
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
    assert osp.isfile(path) and not osp.exists(path + '.tmp')
    state = ckpt['state_dict']
    assert state and all(k.startswith('backbone.') for k in state)
    stamp = osp.getmtime(path)
    again = CheckpointLoader.load_checkpoint('digits://tiny', map_location='cpu')
    assert osp.getmtime(path) == stamp  # read, not retrained
    assert all(torch.equal(state[k], again['state_dict'][k]) for k in state)
    # a changed recipe is a different file, trained anew
    dp.DIGIT_PRETRAINED['tiny'] = dict(TINY, iters=7)
    assert dp.digit_pretrained_path('tiny') != path


def test_weights_equal_in_another_process_with_other_threads(tiny):
    """Benchmark runs in separate processes (2 threads, another seed) must start from the same
    weights: pretraining is single-threaded on a forked, fixed random stream."""
    here = dp.pretrain_on_digit_crops('tiny')
    other = _trained_in_another_process(tiny, 'pretrain_on_digit_crops', 'tiny', TINY)
    assert sorted(other) == sorted(here)
    assert all(torch.equal(here[k], other[k]) for k in here)
    # ... and they are trained: not the initial weights
    conv = 'backbone.conv1.weight'
    torch.manual_seed(0)
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        init = MODELS.build(dict(TINY['backbone']))
    init.init_weights()
    assert here[conv].shape == init.conv1.weight.shape
    assert not torch.equal(here[conv], init.conv1.weight)


def test_a_backbone_init_cfg_loads_them(tiny):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    import mmvitreg  # noqa: F401  (registers the scheme)
    cfg = dict(TINY['backbone'], init_cfg=dict(type='Pretrained', checkpoint='digits://tiny',
                                              prefix='backbone.'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    model.init_weights()
    cached = torch.load(dp.digit_pretrained_path('tiny'), weights_only=True)['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, cached['backbone.' + k]), k


def test_unknown_name_is_one_clear_error(tiny):
    from mmengine.runner import CheckpointLoader
    with pytest.raises(ValueError, match=r'unknown digit-pretrained checkpoint digits://resnet99; '
                       r'known: digits://detr-r18-w32-s8-digit-hoi, digits://plainvit-t-p8, '
                       r'digits://resnet18-w32-s8, digits://tiny$'):
        CheckpointLoader.load_checkpoint('digits://resnet99')


# the shipped DETR recipe on 16 scenes for one epoch, its backbone from scratch: the same code
# path and architecture, seconds to train
DETR_NAME = 'detr-r18-w32-s8-digit-hoi'
TINY_DETR = copy.deepcopy(dp.DIGIT_PRETRAINED[DETR_NAME])
TINY_DETR['data']['num_train'] = 16
TINY_DETR.update(epochs=1, batch_size=8, warmup_iters=1)
TINY_DETR['detector']['backbone']['init_cfg'] = None


@pytest.fixture
def tiny_detr(tmp_path, monkeypatch):
    return _use_recipe(monkeypatch, tmp_path, 'tiny-detr', TINY_DETR)


def test_a_detector_recipe_trains_on_digit_hoi_scenes_and_is_cached(tiny_detr):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    from mmengine.runner import CheckpointLoader

    import mmvitreg  # noqa: F401
    torch_before, np_before = torch.random.get_rng_state(), np.random.get_state()
    ckpt = CheckpointLoader.load_checkpoint('digits://tiny-detr', map_location='cpu')
    assert torch.equal(torch.random.get_rng_state(), torch_before)
    assert np.array_equal(np.random.get_state()[1], np_before[1])
    path = dp.digit_pretrained_path('tiny-detr')
    assert osp.isfile(path) and ckpt['meta']['recipe'] == 'tiny-detr'
    state = ckpt['state_dict']
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        init = MODELS.build(copy.deepcopy(TINY_DETR['detector']))
    init.init_weights()
    assert sorted(state) == sorted(init.state_dict())
    for key in ('backbone.conv1.weight', 'encoder.layers.0.self_attn.attn.in_proj_weight',
                'bbox_head.fc_cls.weight', 'query_embedding.weight'):
        assert not torch.equal(state[key], init.state_dict()[key]), key  # trained


def test_detector_weights_equal_in_another_process_with_other_threads(tiny_detr):
    here = dp.pretrain_detector_on_digit_hoi('tiny-detr')
    other = _trained_in_another_process(tiny_detr, 'pretrain_detector_on_digit_hoi',
                                        'tiny-detr', TINY_DETR)
    assert sorted(other) == sorted(here)
    assert all(torch.equal(here[k], other[k]) for k in here)


def test_the_digit_hoi_qpic_loads_every_detr_weight_but_the_verb_classifier(tiny_detr):
    """What `load_from = 'digits://detr-r18-w32-s8-digit-hoi'` does in the QPIC preset: DETR's
    box classifier becomes the object classifier, its box MLP the subject and object MLPs."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import CheckpointLoader

    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, 'configs/qpic/qpic_r18-w32_1xb16-25e_digit-hoi.py'))
    assert cfg.load_from == 'digits://' + DETR_NAME
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    detr = CheckpointLoader.load_checkpoint('digits://tiny-detr', map_location='cpu')['state_dict']
    result = model.load_state_dict(dict(detr), strict=False)
    assert sorted(result.missing_keys) == ['bbox_head.fc_verb_cls.bias',
                                           'bbox_head.fc_verb_cls.weight']
    assert result.unexpected_keys == []
    loaded = model.state_dict()
    assert torch.equal(loaded['bbox_head.fc_obj_cls.weight'], detr['bbox_head.fc_cls.weight'])
    for who in ('sub', 'obj'):
        assert torch.equal(loaded[f'bbox_head.{who}_fc_reg.weight'],
                           detr['bbox_head.fc_reg.weight'])
    assert torch.equal(loaded['decoder.layers.2.ffn.layers.1.weight'],
                       detr['decoder.layers.2.ffn.layers.1.weight'])


def test_a_recipe_starting_from_another_changes_with_it(monkeypatch, tmp_path):
    monkeypatch.setenv('MMVITREG_CACHE', str(tmp_path))
    before = dp.digit_pretrained_path(DETR_NAME)
    changed = dict(dp.DIGIT_PRETRAINED['resnet18-w32-s8'], iters=801)
    monkeypatch.setitem(dp.DIGIT_PRETRAINED, 'resnet18-w32-s8', changed)
    assert dp.digit_pretrained_path(DETR_NAME) != before
