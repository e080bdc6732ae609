"""QPIC-R50 + DropKey / + DRLoc configs: build through `Regularized` and train one iteration."""
import math

from mmvitreg.testing import last_losses, smoke_train

CFG = 'configs/qpic/qpic_r50_{}8xb2-150e_hico.py'


def _train(variant: str, tmp_path):
    runner = smoke_train(CFG.format(variant), str(tmp_path), task='hoi', max_iters=1,
                         batch_size=2, img_scale=(128, 96))
    losses = last_losses(runner)
    assert losses and all(math.isfinite(v) for v in losses.values())
    for key in ('loss_obj_cls', 'loss_verb_cls', 'loss_sub_bbox', 'loss_obj_iou',
                'd4.loss_verb_cls'):
        assert key in losses, key
    return runner, losses


def test_dropkey_variant_trains_one_iteration(tmp_path):
    from mmvitreg.models.detectors import QPIC
    from mmvitreg.ops.dropkey import dropkey_modules
    runner, _ = _train('dropkey_', tmp_path)
    model = runner.model
    assert isinstance(model, QPIC)
    dks = dropkey_modules(model)
    assert len(dks) == 18  # 6 encoder self-, 6 decoder self-, 6 decoder cross-attentions
    # each group decreases linearly from 0.1 to 0 over its 6 layers
    assert [round(float(dk.ratio), 3) for dk in dks[:6]] == [0.1, 0.08, 0.06, 0.04, 0.02, 0.0]
    names = [n for n, m in model.named_modules() if hasattr(m, 'dropkey')]
    assert sum('cross_attn' in n for n in names) == 6


def test_drloc_variant_trains_one_iteration(tmp_path):
    runner, losses = _train('drloc_', tmp_path)
    assert 'loss_drloc' in losses and losses['loss_drloc'] > 0
    assert hasattr(runner.model, 'drloc_head')
