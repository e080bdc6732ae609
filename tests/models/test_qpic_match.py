"""QPIC match costs and Hungarian assigner on hand-made predictions."""
import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData

import mmvitreg  # noqa: F401  (registers the costs in mmdet TASK_UTILS)
from mmvitreg.models.task_modules import (hoi_box_l1_cost, hoi_giou_cost, hoi_obj_class_cost,
                                          hoi_verb_cost)

IMG = dict(img_shape=(100, 200))  # h, w


def _logits_from_probs(p):
    return torch.log(torch.as_tensor(p, dtype=torch.float))


def test_obj_class_cost_is_minus_softmax_prob():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])  # 2 classes + no-object
    gt = torch.tensor([1, 0, 1])
    cost = hoi_obj_class_cost(logits, gt)
    prob = logits.softmax(-1)
    assert cost.shape == (2, 3)
    torch.testing.assert_close(cost, -prob[:, [1, 0, 1]])
    # the no-object column is never a target but still takes probability mass
    assert cost[0, 1] > -1


def test_verb_cost_matches_official_formula_by_hand():
    # query 0 predicts verbs {0} with p=.9, others .1; query 1 the opposite
    probs = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.9]])
    logits = torch.logit(probs)
    gt = torch.tensor([[1., 0., 0.], [0., 1., 1.]])
    cost = hoi_verb_cost(logits, gt)
    eps = 1e-4
    # by hand: pos part = mean prob of gt verbs, neg part = mean (1-p) of the others
    c00 = -((0.9 / (1 + eps)) + (0.9 + 0.9) / (2 + eps)) / 2
    c01 = -((0.1 + 0.1) / (2 + eps) + 0.1 / (1 + eps)) / 2
    c11 = -((0.9 + 0.9) / (2 + eps) + 0.9 / (1 + eps)) / 2
    torch.testing.assert_close(cost[0, 0], torch.tensor(c00), atol=1e-5, rtol=0)
    torch.testing.assert_close(cost[0, 1], torch.tensor(c01), atol=1e-5, rtol=0)
    torch.testing.assert_close(cost[1, 1], torch.tensor(c11), atol=1e-5, rtol=0)
    assert cost[0, 0] < cost[1, 0] and cost[1, 1] < cost[0, 1]


def test_verb_cost_rejects_mismatched_verb_counts():
    with pytest.raises(ValueError, match='verb classes'):
        hoi_verb_cost(torch.zeros(2, 5), torch.zeros(1, 4))


def test_box_costs_take_max_over_subject_and_object():
    gt_sub = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt_obj = torch.tensor([[0.2, 0.2, 0.1, 0.1]])
    # query 0: perfect subject, object off by 0.3 in cx -> max = 0.3
    # query 1: subject off by 0.1 in cy, perfect object -> max = 0.1
    pred_sub = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.6, 0.2, 0.2]])
    pred_obj = torch.tensor([[0.5, 0.2, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]])
    l1 = hoi_box_l1_cost(pred_sub, pred_obj, gt_sub, gt_obj)
    torch.testing.assert_close(l1, torch.tensor([[0.3], [0.1]]))

    xyxy_sub = torch.tensor([[0., 0., 10., 10.]])
    xyxy_obj = torch.tensor([[20., 20., 30., 30.]])
    same = hoi_giou_cost(xyxy_sub, xyxy_obj, xyxy_sub, xyxy_obj)
    torch.testing.assert_close(same, torch.tensor([[-1.0]]))
    # subject perfect (-1) but object half-overlapping: the max is the object's cost
    half_obj = torch.tensor([[25., 20., 35., 30.]])
    cost = hoi_giou_cost(xyxy_sub, half_obj, xyxy_sub, xyxy_obj)
    assert -1.0 < cost.item() < 0.0


def test_missing_object_box_uses_subject_only():
    gt_sub = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt_obj = torch.zeros(1, 4)  # V-COCO style "no object"
    pred_sub = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    pred_obj = torch.tensor([[0.9, 0.9, 0.1, 0.1]])
    assert hoi_box_l1_cost(pred_sub, pred_obj, gt_sub, gt_obj).item() == pytest.approx(0.0)


def test_box_l1_cost_normalises_pixel_boxes_to_cxcywh():
    cost_fn = TASK_UTILS.build(dict(type='HOIBoxL1Cost', weight=2.0))
    # pixel xyxy on a 200x100 (w x h) image
    pred = InstanceData(sub_bboxes=torch.tensor([[0., 0., 100., 50.]]),
                        obj_bboxes=torch.tensor([[100., 50., 200., 100.]]))
    gt = InstanceData(sub_bboxes=torch.tensor([[0., 0., 100., 50.]]),
                      obj_bboxes=torch.tensor([[50., 50., 150., 100.]]))
    # object cx differs by 50 px / 200 px = 0.25 -> cost 2 * 0.25
    assert cost_fn(pred, gt, IMG).item() == pytest.approx(0.5)
    with pytest.raises(KeyError, match='img_shape'):
        cost_fn(pred, gt, None)
    with pytest.raises(ValueError, match='box_format'):
        TASK_UTILS.build(dict(type='HOIBoxL1Cost', box_format='cxcy'))


def _pred(obj_probs, verb_probs, sub, obj):
    return InstanceData(obj_scores=_logits_from_probs(obj_probs),
                        verb_scores=torch.logit(torch.as_tensor(verb_probs)),
                        sub_bboxes=torch.as_tensor(sub, dtype=torch.float),
                        obj_bboxes=torch.as_tensor(obj, dtype=torch.float))


def test_assigner_uses_all_costs_and_the_max_box_rule():
    assigner = TASK_UTILS.build(dict(type='HOIHungarianAssigner'))
    gt = InstanceData(labels=torch.tensor([0, 1]),
                      verb_labels=torch.tensor([[1., 0.], [0., 1.]]),
                      sub_bboxes=torch.tensor([[0., 0., 50., 50.], [100., 0., 150., 50.]]),
                      obj_bboxes=torch.tensor([[0., 50., 50., 100.], [150., 50., 200., 100.]]))
    # q0: right subject for gt0 but the object of gt1 (max rule -> bad for both)
    # q1: gt1 exactly; q2: gt0 exactly; q3: background-looking query
    pred = _pred(
        obj_probs=[[.5, .4, .1], [.1, .8, .1], [.8, .1, .1], [.1, .1, .8]],
        verb_probs=[[.9, .1], [.1, .9], [.9, .1], [.1, .1]],
        sub=[[0, 0, 50, 50], [100, 0, 150, 50], [0, 0, 50, 50], [0, 0, 200, 100]],
        obj=[[150, 50, 200, 100], [150, 50, 200, 100], [0, 50, 50, 100], [0, 0, 200, 100]])
    result = assigner.assign(pred, gt, img_meta=IMG)
    assert result.gt_inds.tolist() == [0, 2, 1, 0]
    assert result.labels.tolist() == [-1, 1, 0, -1]


def test_assigner_verb_cost_breaks_box_ties():
    assigner = TASK_UTILS.build(dict(type='HOIHungarianAssigner'))
    box = [[0., 0., 50., 50.]]
    gt = InstanceData(labels=torch.tensor([3, 3]),
                      verb_labels=torch.tensor([[1., 0., 0.], [0., 0., 1.]]),
                      sub_bboxes=torch.tensor(box * 2), obj_bboxes=torch.tensor(box * 2))
    # identical boxes and classes: only the verbs tell the queries apart
    obj_probs = [[.02] * 3 + [.9] + [.06]] * 2
    pred = _pred(obj_probs, [[.1, .1, .9], [.9, .1, .1]], box * 2, box * 2)
    result = assigner.assign(pred, gt, img_meta=IMG)
    assert result.gt_inds.tolist() == [2, 1]


def test_assigner_without_gts_and_with_bad_fields():
    assigner = TASK_UTILS.build(dict(type='HOIHungarianAssigner'))
    empty = InstanceData(labels=torch.zeros(0, dtype=torch.long),
                         verb_labels=torch.zeros(0, 2), sub_bboxes=torch.zeros(0, 4),
                         obj_bboxes=torch.zeros(0, 4))
    pred = _pred([[.5, .5]], [[.5, .5]], [[0, 0, 1, 1]], [[0, 0, 1, 1]])
    assert assigner.assign(pred, empty, img_meta=IMG).gt_inds.tolist() == [0]
    no_verbs = InstanceData(labels=torch.tensor([0]), sub_bboxes=torch.zeros(1, 4),
                            obj_bboxes=torch.zeros(1, 4))
    with pytest.raises(KeyError, match='verb_labels'):
        assigner.assign(pred, no_verbs, img_meta=IMG)
    with pytest.raises(ValueError, match='at least one match cost'):
        TASK_UTILS.build(dict(type='HOIHungarianAssigner', match_costs=[]))


def test_assigner_cost_weights_change_the_matching():
    """With only the object-class cost, a query with the right class but wrong boxes wins."""
    gt = InstanceData(labels=torch.tensor([1]), verb_labels=torch.tensor([[1., 0.]]),
                      sub_bboxes=torch.tensor([[0., 0., 50., 50.]]),
                      obj_bboxes=torch.tensor([[50., 50., 100., 100.]]))
    pred = _pred(obj_probs=[[.1, .8, .1], [.4, .5, .1]], verb_probs=[[.5, .5], [.5, .5]],
                 sub=[[100, 0, 150, 50], [0, 0, 50, 50]],
                 obj=[[150, 50, 200, 100], [50, 50, 100, 100]])
    full = TASK_UTILS.build(dict(type='HOIHungarianAssigner'))
    cls_only = TASK_UTILS.build(dict(type='HOIHungarianAssigner',
                                     match_costs=[dict(type='HOIClassCost')]))
    assert full.assign(pred, gt, img_meta=IMG).gt_inds.tolist() == [0, 1]
    assert cls_only.assign(pred, gt, img_meta=IMG).gt_inds.tolist() == [1, 0]


def test_batched_assignment_equals_image_by_image():
    """assign_batch (one cost computation for the batch, as the official matcher) gives every
    image the same match as assign() on that image alone, whatever the image shapes and target
    counts (none included)."""
    assigner = TASK_UTILS.build(dict(type='HOIHungarianAssigner'))
    gen = torch.Generator().manual_seed(0)
    preds, gts, metas = [], [], []
    for n_gt, shape in zip([3, 0, 1, 5], [(100, 200), (64, 64), (80, 120), (90, 90)]):
        h, w = shape
        scale = torch.tensor([w, h, w, h], dtype=torch.float)

        def boxes(n):
            xy = torch.rand(n, 2, generator=gen) * 0.6
            wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
            return torch.cat([xy, xy + wh], 1) * scale
        preds.append(InstanceData(obj_scores=torch.randn(7, 5, generator=gen),
                                  verb_scores=torch.randn(7, 4, generator=gen),
                                  sub_bboxes=boxes(7), obj_bboxes=boxes(7)))
        gts.append(InstanceData(labels=torch.randint(0, 4, (n_gt, ), generator=gen),
                                verb_labels=(torch.rand(n_gt, 4, generator=gen) > 0.5).float(),
                                sub_bboxes=boxes(n_gt), obj_bboxes=boxes(n_gt)))
        metas.append(dict(img_shape=shape))
    batched = assigner.assign_batch(preds, gts, metas)
    for pred, gt, meta, result in zip(preds, gts, metas, batched):
        single = assigner.assign(pred, gt, img_meta=meta)
        assert result.num_gts == single.num_gts
        assert torch.equal(result.gt_inds, single.gt_inds)
        assert torch.equal(result.labels, single.labels)
    assert batched[1].gt_inds.tolist() == [0] * 7  # no targets: every query is background
    with pytest.raises(ValueError, match='got 4 predictions, 3 targets'):
        assigner.assign_batch(preds, gts[:3], metas)
