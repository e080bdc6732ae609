"""Every preset and suite in configs/benchmark is an mmengine config that loads and builds every
run config; the DETR/QPIC DropKey presets are the project's DropKey configs; the digit-scene and
digit-HOI presets reuse the project's recipes; the digits preset's variants switch on what they
claim."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmvitreg.benchmark import build_run_config, load_spec, load_suite
from mmvitreg.benchmark.resources import plan_variant

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FILES = sorted(glob.glob(osp.join(REPO, 'configs', 'benchmark', '*.py')))


def test_expected_presets_and_suites_exist():
    names = {osp.basename(p) for p in FILES}
    assert {'digits_regularizers.py', 'cifar100_dropkey.py', 'in1k_dropkey.py',
            'coco_detr_dropkey.py', 'hico_qpic_dropkey.py', 'cifar100_drloc.py',
            'deepvit_depth.py', 'cifar100_dhvt_vs_deit.py', 'digit_scenes_detection.py',
            'digit_scenes_hoi.py', 'suite_digits_cpu.py', 'suite_dropkey_gpu.py',
            'suite_drloc_gpu.py'} <= names


@pytest.mark.parametrize('path', FILES, ids=[osp.basename(p) for p in FILES])
def test_loads_with_mmengine_and_builds_every_run(path):
    cfg = Config.fromfile(path)
    specs = [t.spec for t in load_suite(path).tasks] if 'suite' in cfg else [load_spec(path)]
    if 'suite' not in cfg:  # a preset is the baseline's own training config
        assert cfg.get('default_scope') in ('mmpretrain', 'mmdet') and 'model' in cfg
    for spec in specs:
        for v in spec.variants:
            run = build_run_config(spec, v, seed=3)
            assert run.randomness.seed == 3 and 'benchmark' not in run
            assert any(h['type'] == 'PeakMemoryHook' for h in run.custom_hooks)
            assert run.get('default_scope') in ('mmpretrain', 'mmdet')


@pytest.mark.parametrize('preset,config,variant', [
    ('coco_detr_dropkey.py', 'configs/dropkey/detr_r50_dropkey_8xb2-150e_coco.py',
     'dropkey_dropout'),
    ('coco_detr_dropkey.py', 'configs/dropkey/detr_r50_8xb2-150e_coco.py', 'dropout'),
    ('hico_qpic_dropkey.py', 'configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
     'dropkey_dropout'),
    ('hico_qpic_dropkey.py', 'configs/qpic/qpic_r50_8xb2-150e_hico.py', 'dropout'),
    ('hico_qpic_dropkey.py', 'configs/qpic/qpic_r50_drloc_8xb2-150e_hico.py', 'drloc'),
])
def test_gpu_dropkey_presets_train_exactly_the_project_configs(preset, config, variant):
    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', preset))
    run = build_run_config(spec, spec.variant(variant), 0)
    ref = Config.fromfile(osp.join(REPO, config))
    assert run.model.to_dict() == ref.model.to_dict()
    assert run.optim_wrapper.to_dict() == ref.optim_wrapper.to_dict()


@pytest.mark.parametrize('preset', ['coco_detr_dropkey.py', 'hico_qpic_dropkey.py'])
def test_detr_qpic_presets_switch_off_only_the_attention_weight_dropout(preset):
    """`baseline` / `dropkey` are `dropout` / `dropkey_dropout` (the stock model and the project
    config) with the attention-weight dropout 0; mmcv's `dropout` also set the residual dropout
    after the attention, which stays 0.1."""
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', preset))
    for off, on in (('baseline', 'dropout'), ('dropkey', 'dropkey_dropout')):
        a, b = (build_run_config(spec, spec.variant(n), 0).model.to_dict() for n in (off, on))
        for part, attn in (('encoder', 'self_attn_cfg'), ('decoder', 'self_attn_cfg'),
                           ('decoder', 'cross_attn_cfg')):
            cfg_off, cfg_on = a[part]['layer_cfg'].pop(attn), b[part]['layer_cfg'].pop(attn)
            assert cfg_on['dropout'] == 0.1 and 'dropout' not in cfg_off
            built = MultiheadAttention(**cfg_off)
            assert built.attn.dropout == 0.0 and built.dropout_layer.p == 0.1
            assert {k: v for k, v in cfg_on.items() if k != 'dropout'} == \
                {k: v for k, v in cfg_off.items() if k not in ('attn_drop', 'dropout_layer')}
        assert a == b, (off, on)


def test_digit_hoi_preset_reuses_the_qpic_recipes():
    """The HOI preset's variants are the project's QPIC recipes unchanged: DropKey restarted in
    each attention group with the baseline's attention dropout kept; DRLoc on the backbone."""
    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', 'digit_scenes_hoi.py'))
    base = build_run_config(spec, spec.variant('baseline'), 0)
    for variant, key, recipe in (('dropkey', 'dropkey', 'qpic_r50_dropkey_8xb2-150e_hico.py'),
                                 ('drloc', 'drloc', 'qpic_r50_drloc_8xb2-150e_hico.py')):
        run = build_run_config(spec, spec.variant(variant), 0)
        ref = Config.fromfile(osp.join(REPO, 'configs', 'qpic', recipe))
        assert run.model.type == 'Regularized' and run.model.host == 'QPIC'
        assert run.model[key] == ref.model[key]
        run.model.pop(key)
        assert {k: v for k, v in run.model.items() if k not in ('type', 'host')} == \
            {k: v for k, v in base.model.items() if k != 'type'}
    assert len(ref.model.drloc) and base.model.backbone.depth == 18


def test_digit_scenes_preset_switches_on_the_vit_recipes():
    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', 'digit_scenes_detection.py'))
    base = build_run_config(spec, spec.variant('baseline'), 0)
    dk = build_run_config(spec, spec.variant('dropkey'), 0)
    ref = Config.fromfile(osp.join(REPO, 'configs', 'dropkey',
                                   'mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py'))
    assert dk.model.backbone.type == 'Regularized' and dk.model.backbone.host == 'PlainViT'
    assert dk.model.backbone.dropkey == ref.model.backbone.dropkey
    assert {k: v for k, v in dk.model.backbone.items() if k not in ('type', 'host', 'dropkey')} \
        == {k: v for k, v in base.model.backbone.items() if k != 'type'}
    drloc = build_run_config(spec, spec.variant('drloc'), 0)
    assert drloc.model.type == 'Regularized' and drloc.model.host == 'FCOS'
    assert drloc.model.drloc.source == 'backbone' and drloc.model.drloc.index == -1
    for cfg in (base, dk, drloc):  # validation = the test split, evaluated once at the end
        assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs
    assert spec.test is False


def test_digits_preset_variants_do_what_they_say():
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample

    import mmvitreg  # noqa: F401
    from mmvitreg.ops.dropkey import dropkey_modules
    from mmvitreg.registry import MODELS

    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', 'digits_regularizers.py'))
    assert spec.test is False and len(spec.seeds) >= 5  # val split == test split for digits
    seen = {}
    for v in spec.variants:
        cfg = build_run_config(spec, v, 0)
        assert cfg.train_cfg.max_epochs == cfg.param_scheduler[1].end  # cosine fits the schedule
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            torch.manual_seed(0)
            model = MODELS.build(cfg.model)
        data = model.data_preprocessor(
            dict(inputs=list(torch.randint(0, 255, (2, 3, 16, 16)).float()),
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)]), True)
        losses = model(**data, mode='loss')
        assert all(torch.isfinite(val).all() for val in losses.values())
        attn_drop = [m.attn_drop.p if isinstance(m.attn_drop, torch.nn.Dropout) else m.attn_drop
                     for m in model.modules() if hasattr(m, 'attn_drop')]
        seen[v.name] = dict(
            dropkey=len(list(dropkey_modules(model))), drloc='loss_drloc' in losses,
            reatt=sum(type(m).__name__ == 'ReAttention' or hasattr(m, 'reatten_matrix')
                      for m in model.modules()),
            backbone=type(model.backbone).__name__, attn_drop=max(attn_drop, default=0.0))
    assert seen['baseline'] == dict(dropkey=0, drloc=False, reatt=0, backbone='VisionTransformer',
                                    attn_drop=0.0)
    assert seen['dropout']['attn_drop'] == pytest.approx(0.1) and seen['dropout']['dropkey'] == 0
    assert seen['dropkey']['dropkey'] == 6  # one per block of the 6-block ViT
    assert seen['drloc']['drloc'] and seen['drloc']['dropkey'] == 0
    assert seen['reattention']['reatt'] == 6
    assert seen['dhvt']['backbone'] == 'DHVT'


GPU_PRESETS = ['cifar100_dropkey.py', 'in1k_dropkey.py', 'coco_detr_dropkey.py',
               'hico_qpic_dropkey.py', 'cifar100_drloc.py', 'cifar100_dhvt_vs_deit.py',
               'deepvit_depth.py']


@pytest.mark.parametrize('name', GPU_PRESETS)
def test_gpu_presets_keep_their_total_batch_on_8_gpus_and_declare_resources(name):
    """Every GPU preset runs on one 8-GPU node with its recipe's total batch and LR, keeps at
    most last + best checkpoint per run, and says what --dry-run estimates from."""
    spec = load_spec(osp.join(REPO, 'configs', 'benchmark', name))
    res = spec.resources
    assert res['gpu_hours_per_epoch'] > 0 and res['checkpoint_gb'] > 0 and res['source']
    for v in spec.variants:
        cfg = build_run_config(spec, v, 0)
        plan = plan_variant(spec, v.name, '', 8, 'keep-total', 1)
        assert plan.batch['total'] == cfg.auto_scale_lr.base_batch_size
        assert plan.batch['per_gpu'] * 8 == plan.batch['total'] and plan.batch['lr_scale'] == 1
        assert plan.checkpoints in (1, 2) and plan.epochs == cfg.train_cfg.max_epochs
