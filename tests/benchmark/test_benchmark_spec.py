import os.path as osp
import textwrap

import pytest

from mmvitreg.benchmark.spec import (build_run_config, config_fingerprint, load_spec, plan_runs,
                                     select)

BASE = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', drop_rate=0.0))
train_cfg = dict(by_epoch=True, max_epochs=30)
custom_hooks = [dict(type='EMAHook')]
randomness = dict(seed=0, deterministic=False)
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def preset(tmp_path):
    _write(tmp_path, 'base.py', BASE)
    _write(tmp_path, 'other.py', BASE.replace('VisionTransformer', 'SwinTransformer'))
    return _write(tmp_path, 'p.py', """
        base = 'base.py'
        seeds = [0, 1]
        metric = 'accuracy/top1'
        cfg_options = {'train_cfg.max_epochs': 4}
        variants = dict(
            baseline=dict(),
            dropkey=dict(cfg_options={'model.backbone.type': 'Regularized',
                                      'model.backbone.host': 'VisionTransformer',
                                      'model.backbone.dropkey': dict(ratio=0.1),
                                      'train_cfg.max_epochs': 6}),
            swin=dict(config='other.py', description='another backbone'),
        )
        """)


def test_load_spec_defaults_and_order(preset):
    spec = load_spec(preset)
    assert spec.name == 'p' and [v.name for v in spec.variants] == ['baseline', 'dropkey', 'swin']
    assert spec.metrics == ['accuracy/top1'] and spec.baseline == 'baseline'
    assert spec.test and spec.test_checkpoint == 'last' and spec.higher_is_better
    runs = plan_runs(spec, 'wd')
    # seed-major: every variant's first seed before any second seed
    assert [r.key for r in runs] == ['baseline/seed0', 'dropkey/seed0', 'swin/seed0',
                                     'baseline/seed1', 'dropkey/seed1', 'swin/seed1']
    assert runs[4].work_dir == osp.join('wd', 'dropkey', 'seed1')
    sub = select(spec, ['swin', 'baseline'], [3])
    assert [v.name for v in sub.variants] == ['swin', 'baseline'] and sub.seeds == [3]
    with pytest.raises(KeyError, match="unknown variant 'nope'"):
        select(spec, ['nope'])


def test_build_run_config_merge_order_seed_and_hook(preset):
    spec = load_spec(preset)
    cfg = build_run_config(spec, spec.variant('dropkey'), seed=7,
                           extra_options={'train_cfg.max_epochs': 1})
    assert cfg.model.backbone.type == 'Regularized'
    assert cfg.model.backbone.host == 'VisionTransformer'
    assert cfg.model.backbone.dropkey == dict(ratio=0.1)
    assert cfg.model.backbone.drop_rate == 0.0  # the rest of the inherited dict is kept
    assert cfg.train_cfg.max_epochs == 1  # command line > variant > preset > config
    assert cfg.randomness == dict(seed=7, deterministic=False)
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'PeakMemoryHook']
    assert build_run_config(spec, spec.variant('dropkey'), 7).train_cfg.max_epochs == 6
    base = build_run_config(spec, spec.variant('baseline'), 7)
    assert base.train_cfg.max_epochs == 4 and base.model.backbone.type == 'VisionTransformer'
    swin = build_run_config(spec, spec.variant('swin'), 0)
    assert swin.model.backbone.type == 'SwinTransformer'
    # the fingerprint follows the config: same config -> same, other seed/override -> different
    fp = config_fingerprint(base)
    assert fp == config_fingerprint(build_run_config(spec, spec.variant('baseline'), 7))
    assert fp != config_fingerprint(build_run_config(spec, spec.variant('baseline'), 8))


def test_missing_variant_config_raises(tmp_path):
    _write(tmp_path, 'base.py', BASE)
    path = _write(tmp_path, 'p.py', """
        base = 'base.py'
        metrics = ['acc']
        variants = dict(a=dict(config='missing.py'))
        """)
    spec = load_spec(path)
    with pytest.raises(FileNotFoundError, match='config file not found: missing.py'):
        build_run_config(spec, spec.variants[0], 0)


@pytest.mark.parametrize('body, error, match', [
    ("metrics=['a']\nvariants=dict(a=dict())\nbogus=1", KeyError, r"unknown key\(s\) \['bogus'\]"),
    ("base='b.py'\nmetrics=['a']\nvariants=dict()", ValueError, 'needs `variants`'),
    ("base='b.py'\nvariants=dict(a=dict())", ValueError, 'needs `metrics`'),
    ("base='b.py'\nmetrics=['a']\nvariants=dict(a=dict(cfg=1))", KeyError,
     r"variant 'a' has unknown key\(s\) \['cfg'\]"),
    ("base='b.py'\nmetrics=['a']\nvariants=dict(a=dict(cfg_options=3))", ValueError,
     'must be a dict of config overrides'),
    ("metrics=['a']\nvariants=dict(a=dict())", ValueError, 'has no `base` config'),
    ("base='b.py'\nmetrics=['a']\nbaseline='z'\nvariants=dict(a=dict())", ValueError,
     "baseline 'z' is not one of the variants"),
    ("base='b.py'\nmetrics=['a']\nseeds=[]\nvariants=dict(a=dict())", ValueError,
     '`seeds` must be a non-empty list of ints'),
    ("base='b.py'\nmetrics=['a']\ntest_checkpoint='first'\nvariants=dict(a=dict())", ValueError,
     "test_checkpoint must be 'last' or 'best', got 'first'"),
])
def test_bad_presets_give_one_sentence_errors(tmp_path, body, error, match):
    path = _write(tmp_path, 'p.py', body)
    with pytest.raises(error, match=match):
        load_spec(path)


def test_missing_preset_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='benchmark preset not found'):
        load_spec(str(tmp_path / 'nope.py'))
