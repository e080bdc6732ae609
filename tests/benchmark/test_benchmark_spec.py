"""Benchmark presets are mmengine configs: loading, validation, the merge order of a run's
config, recipes taken from regularizer configs, fingerprints and the run plan."""
import os.path as osp
import textwrap

import pytest
from mmengine.config import Config

from mmvitreg.benchmark.spec import (build_run_config, config_fingerprint, load_spec, plan_runs,
                                     recipe_delta, select)

BASE = """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', drop_rate=0.0,
                                                   layer_cfgs=dict(attn_drop_rate=0.1)))
train_cfg = dict(by_epoch=True, max_epochs=30)
custom_hooks = [dict(type='EMAHook')]
randomness = dict(seed=0, deterministic=False)
"""
RECIPE = """
_base_ = ['./base.py']
model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                           dropkey=dict(ratio=0.1, schedule='decrease')))
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def preset(tmp_path):
    _write(tmp_path, 'base.py', BASE)
    _write(tmp_path, 'recipe.py', RECIPE)
    _write(tmp_path, 'other.py', BASE.replace('VisionTransformer', 'SwinTransformer'))
    return _write(tmp_path, 'p.py', """
        _base_ = ['./base.py']
        train_cfg = dict(max_epochs=4)
        benchmark = dict(
            seeds=[0, 1],
            metrics='accuracy/top1',
            cfg_options={'train_cfg.val_interval': 2},
            variants=dict(
                baseline=dict(),
                dropkey=dict(recipe='recipe.py', cfg_options={'train_cfg.max_epochs': 6}),
                swin=dict(config='other.py', description='another backbone'),
            ))
        """)


def test_preset_is_a_runnable_mmengine_config(preset):
    cfg = Config.fromfile(preset)
    assert cfg.model.backbone.type == 'VisionTransformer' and cfg.train_cfg.max_epochs == 4
    spec = load_spec(preset)
    assert [v.name for v in spec.variants] == ['baseline', 'dropkey', 'swin']
    assert spec.baseline == 'baseline' and spec.metrics == ['accuracy/top1']
    assert spec.test and spec.alpha == 0.05 and spec.name == 'p'


def test_run_config_merge_order_recipe_seed_and_hook(preset):
    spec = load_spec(preset)
    base = build_run_config(spec, spec.variant('baseline'), seed=7)
    assert 'benchmark' not in base
    assert base.train_cfg.max_epochs == 4 and base.train_cfg.val_interval == 2
    assert base.randomness == dict(seed=7, deterministic=False)
    assert [h['type'] for h in base.custom_hooks] == ['EMAHook', 'PeakMemoryHook']
    assert base.custom_imports['imports'] == ['mmvitreg']
    dk = build_run_config(spec, spec.variant('dropkey'), seed=1)
    # the recipe's change, applied to the preset (not the recipe's own base), then the options
    assert dk.model.backbone.type == 'Regularized'
    assert dk.model.backbone.dropkey == dict(ratio=0.1, schedule='decrease')
    assert dk.model.backbone.layer_cfgs.attn_drop_rate == 0.1
    assert dk.train_cfg.max_epochs == 6 and dk.train_cfg.val_interval == 2
    swin = build_run_config(spec, spec.variant('swin'), seed=0)
    assert swin.model.backbone.type == 'SwinTransformer' and swin.train_cfg.max_epochs == 30
    assert swin.train_cfg.val_interval == 2  # benchmark.cfg_options reach whole configs too
    assert config_fingerprint(base) != config_fingerprint(
        build_run_config(spec, spec.variant('baseline'), seed=8))


def test_recipe_delta_handles_removed_keys(tmp_path):
    _write(tmp_path, 'base.py', BASE)
    path = _write(tmp_path, 'r.py', """
        _base_ = ['./base.py']
        model = dict(backbone=dict(_delete_=True, type='DHVT', arch='tiny'))
        """)
    delta = recipe_delta(path)
    assert delta == {'model': {'backbone': {'type': 'DHVT', 'arch': 'tiny', '_delete_': True}}}
    with pytest.raises(ValueError, match='has no `_base_`'):
        recipe_delta(str(tmp_path / 'base.py'))


def test_plan_is_seed_major_and_select(preset, tmp_path):
    spec = select(load_spec(preset), ['swin', 'baseline'], [3, 4])
    runs = plan_runs(spec, 'wd', 'task')
    assert [r.key for r in runs] == ['task/swin/seed3', 'task/baseline/seed3',
                                     'task/swin/seed4', 'task/baseline/seed4']
    assert runs[0].work_dir == osp.join('wd', 'swin', 'seed3')
    with pytest.raises(KeyError, match="unknown variant 'nope'"):
        select(load_spec(preset), ['nope'])


@pytest.mark.parametrize('body,error,match', [
    ("x = 1", KeyError, 'is not a benchmark preset'),
    ("base = 'b.py'\nvariants = dict(a=dict())", KeyError, 'old schema with a top-level `base`'),
    ("benchmark = dict(metrics=['m'], variants=dict())", ValueError, 'non-empty dict'),
    ("benchmark = dict(metrics=['m'], variants=dict(a=dict(conf='x')))", KeyError,
     r"unknown key\(s\) \['conf'\]"),
    ("benchmark = dict(variants=dict(a=dict()))", ValueError, 'must list metric names'),
    ("benchmark = dict(metrics=['m'], seeds=[], variants=dict(a=dict()))", ValueError,
     'non-empty list of ints'),
    ("benchmark = dict(metrics=['m'], baseline='b', variants=dict(a=dict()))", ValueError,
     "baseline 'b' is not one of the variants"),
    ("benchmark = dict(metrics=['m'], alpha=2, variants=dict(a=dict()))", ValueError,
     r'alpha` must be in \(0, 1\)'),
    ("benchmark = dict(metrics=['m'], spam=1, variants=dict(a=dict()))", KeyError,
     r"unknown key\(s\) \['spam'\]"),
    ("benchmark = dict(metrics=['m'], resources=dict(gpu_hours=1), variants=dict(a=dict()))",
     KeyError, r"`benchmark.resources` .* got \['gpu_hours'\]"),
    ("benchmark = dict(metrics=['m'], resources=dict(checkpoint_gb=0), variants=dict(a=dict()))",
     ValueError, r'resources.checkpoint_gb` .* must be a number > 0, got 0'),
    ("benchmark = dict(metrics=['m'], variants=dict(a=dict(question='q')))", ValueError,
     "variant 'a' of .* has a question but no baseline"),
    ("benchmark = dict(metrics=['m'], variants=dict(a=dict(), b=dict(question=dict(c='q'))))",
     ValueError, "question against 'c', which is not another variant"),
    ("benchmark = dict(metrics=['m'], variants=dict(a=dict(), b=dict(question=dict(a=''))))",
     ValueError, "the question against 'a' must be a non-empty string"),
])
def test_bad_presets_give_one_sentence_errors(tmp_path, body, error, match):
    with pytest.raises(error, match=match):
        load_spec(_write(tmp_path, 'bad.py', body))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='benchmark preset not found'):
        load_spec(str(tmp_path / 'nope.py'))
    spec = load_spec(_write(tmp_path, 'p.py', "default_scope = 'mmpretrain'\nbenchmark = dict("
                            "metrics=['m'], variants=dict(a=dict(config='gone.py')))"))
    with pytest.raises(FileNotFoundError, match='config file not found: gone.py'):
        build_run_config(spec, spec.variant('a'), 0)


def test_each_comparison_declares_its_question(tmp_path):
    """A string is the question against the variant's baseline (its own or the preset's); a
    dict names further references. Questions are metadata: the run config does not change."""
    path = _write(tmp_path, 'q.py', """
        default_scope = 'mmpretrain'
        model = dict(type='ImageClassifier')
        benchmark = dict(metrics=['m'], baseline='none', variants=dict(
            none=dict(), drop=dict(question='dropout vs none'),
            dk=dict(question=dict(none='DropKey vs none', drop='DropKey vs dropout')),
            dk2=dict(baseline='drop', question='DropKey + dropout vs dropout')))
        """)
    spec = load_spec(path)
    assert spec.variant('drop').questions == {'none': 'dropout vs none'}
    assert spec.question('dk', 'drop') == 'DropKey vs dropout' and spec.question('dk', 'dk2') == ''
    assert spec.questions() == {'none': '', 'drop': 'dropout vs none', 'dk': 'DropKey vs none',
                                'dk2': 'DropKey + dropout vs dropout'}
    plain = _write(tmp_path, 'plain.py', open(path).read().replace("question=", "description="))
    plain_spec = load_spec(plain)
    assert config_fingerprint(build_run_config(spec, spec.variant('dk2'), 0)) == \
        config_fingerprint(build_run_config(plain_spec, plain_spec.variant('dk2'), 0))


DATA = """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer'))
data = dict(type='CustomDataset', data_root='data/x', pipeline=[dict(type='PackInputs')])
train_dataloader = dict(dataset=dict(data, data_prefix='train'))
val_dataloader = dict(dataset=dict(data, data_prefix='{val}', indices={indices}))
test_dataloader = dict(dataset=dict(data, data_prefix='test', pipeline=[]))
custom_hooks = {hooks}
benchmark = dict(metrics=['accuracy/top1'], variants=dict(a=dict()), {options})
"""
EARLY_STOP = "[dict(type='EarlyStoppingHook', monitor='accuracy/top1', patience=3)]"


@pytest.mark.parametrize('val,indices,hooks,options,why', [
    ('test', None, [], "test_checkpoint='best'", 'read the same data'),
    ('test', 100, [], "test_checkpoint='best'", 'read the same data'),  # a subset of test
    ('test', None, EARLY_STOP, '', 'EarlyStoppingHook picks the stopping epoch'),
    ('val', None, EARLY_STOP, 'test=False', r'the reported result is that validation'),
], ids=['best-on-test', 'best-on-a-subset-of-test', 'early-stop-on-test', 'early-stop-result'])
def test_selecting_on_the_test_data_is_refused(tmp_path, val, indices, hooks, options, why):
    path = _write(tmp_path, 'sel.py', DATA.format(val=val, indices=indices, hooks=hooks,
                                                  options=options))
    with pytest.raises(ValueError, match=f'^preset sel: .*{why}.*hold out a validation split'
                       ) as info:
        load_spec(path)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('hooks,options', [
    ([], "test_checkpoint='best'"), (EARLY_STOP, ''), (EARLY_STOP, "test_checkpoint='best'"),
    (EARLY_STOP.replace('EarlyStopping', 'EMA'), 'test=False')],
    ids=['best', 'early-stop', 'both', 'no-selection-last-validation'])
def test_selecting_on_a_held_out_validation_split_is_accepted(tmp_path, hooks, options):
    path = _write(tmp_path, 'sel.py', DATA.format(val='val', indices=None, hooks=hooks,
                                                  options=options))
    spec = load_spec(path)
    cfg = build_run_config(spec, spec.variant('a'), 0)
    assert cfg.val_dataloader.dataset.data_prefix == 'val'


def test_digits_demo_with_the_best_checkpoint_is_refused(tmp_path):
    """The digits config validates on its test split: 'best' would pick on the test data; a
    variant that adds early stopping is refused when its run config is built (a failed run)."""
    from tests._helpers import DIGITS_CONFIG

    def preset(options, variant_options):
        return _write(tmp_path, 'digits.py', f"""
            _base_ = [{DIGITS_CONFIG!r}]
            benchmark = dict(metrics=['accuracy/top1'], {options},
                             variants=dict(a=dict(), b=dict(cfg_options={variant_options})))
            """)
    with pytest.raises(ValueError, match="preset digits: test_checkpoint='best'"):
        load_spec(preset("test_checkpoint='best'", '{}'))
    spec = load_spec(preset('test=True', "{'custom_hooks': %s}" % EARLY_STOP))
    build_run_config(spec, spec.variant('a'), 0)
    with pytest.raises(ValueError, match='EarlyStoppingHook .* read the same data'):
        build_run_config(spec, spec.variant('b'), 0)
