"""Every benchmark preset in configs/benchmark loads, references configs that exist, and merges
its overrides; the default (digits) preset's variants build and switch on what they claim."""
import glob
import os.path as osp

import pytest
import torch

from mmvitreg.benchmark.spec import REPO_ROOT, build_run_config, load_spec, resolve_path

PRESETS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'benchmark', '*.py')))


def test_expected_presets_exist():
    names = {osp.basename(p) for p in PRESETS}
    assert {'digits_regularizers.py', 'cifar100_dropkey.py', 'in1k_dropkey.py',
            'coco_detr_dropkey.py', 'hico_qpic_dropkey.py', 'cifar100_drloc.py',
            'deepvit_depth.py', 'cifar100_dhvt_vs_deit.py'} <= names


@pytest.mark.parametrize('path', PRESETS, ids=[osp.basename(p) for p in PRESETS])
def test_preset_configs_exist_and_merge(path):
    spec = load_spec(path)
    assert spec.variants and spec.metrics
    for v in spec.variants:
        assert osp.isfile(resolve_path(v.config or spec.base, osp.dirname(path)))
        cfg = build_run_config(spec, v, seed=3)
        assert cfg.randomness.seed == 3
        assert any(h['type'] == 'PeakMemoryHook' for h in cfg.custom_hooks)
        assert 'mmvitreg' in cfg.custom_imports['imports']
        assert cfg.get('default_scope') in ('mmpretrain', 'mmdet')


def test_digits_preset_variants_do_what_they_say():
    import mmvitreg  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample

    from mmvitreg.models.layers.dropkey import dropkey_modules
    from mmvitreg.models.layers.reattention import ReAttention
    from mmvitreg.registry import MODELS

    spec = load_spec(osp.join(REPO_ROOT, 'configs', 'benchmark', 'digits_regularizers.py'))
    assert spec.test is False and spec.seeds == [0, 1]  # val split == test split for digits
    seen = {}
    for v in spec.variants:
        cfg = build_run_config(spec, v, 0)
        assert cfg.train_cfg.max_epochs == cfg.param_scheduler[1].end  # cosine fits the schedule
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            torch.manual_seed(0)
            model = MODELS.build(cfg.model)
        data = model.data_preprocessor(
            dict(inputs=list(torch.randint(0, 255, (2, 3, 32, 32)).float()),
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)]), True)
        losses = model(**data, mode='loss')
        assert all(torch.isfinite(val).all() for val in losses.values())
        dropkeys = list(dropkey_modules(model))
        # mmpretrain's MultiheadAttention keeps the attention-weight dropout rate as a float
        attn_drop = [m.attn_drop.p if isinstance(m.attn_drop, torch.nn.Dropout) else m.attn_drop
                     for m in model.modules() if hasattr(m, 'attn_drop')]
        seen[v.name] = dict(
            dropkey=len(dropkeys), drloc='loss_drloc' in losses,
            reatt=sum(isinstance(m, ReAttention) for m in model.modules()),
            backbone=type(model.backbone).__name__, attn_drop=max(attn_drop, default=0.0))
    assert seen['baseline'] == dict(dropkey=0, drloc=False, reatt=0, backbone='VisionTransformer',
                                    attn_drop=0.0)
    assert seen['dropout']['attn_drop'] == pytest.approx(0.1) and seen['dropout']['dropkey'] == 0
    for name in ('dropkey_constant', 'dropkey_decrease', 'dropkey_drloc'):
        assert seen[name]['dropkey'] == 6, name  # one per block of the 6-block ViT
    assert seen['drloc']['drloc'] and seen['dropkey_drloc']['drloc']
    assert seen['drloc']['dropkey'] == 0
    assert seen['reattention']['reatt'] == 6
    assert seen['dhvt']['backbone'] == 'DHVT'
