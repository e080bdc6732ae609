"""QPICHead: targets from the HOI data contract, set losses, DETR checkpoint mapping, predict."""
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from mmengine.structures import InstanceData

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.qpic_head import QPICHead, hoi_targets_from_sample

C, V, D, Q = 3, 4, 16, 5
IMG_SHAPE = (100, 200)


def _head(**kwargs):
    kwargs.setdefault('test_cfg', dict(max_per_img=7, corre=None))
    return QPICHead(num_obj_classes=C, num_verb_classes=V, embed_dims=D, **kwargs)


def _sample(sub_ids=(0, 0), obj_ids=(1, 2), verbs=((1, 0, 0, 1), (0, 1, 0, 0))):
    s = DetDataSample(metainfo=dict(img_shape=IMG_SHAPE, scale_factor=(2.0, 2.0),
                                    ori_shape=(50, 100), batch_input_shape=IMG_SHAPE))
    s.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 10., 60., 90.], [100., 20., 180., 60.], [50., 50., 90., 95.]]),
        labels=torch.tensor([0, 2, 1]))
    s.gt_hoi = InstanceData(sub_ids=torch.tensor(sub_ids), obj_ids=torch.tensor(obj_ids),
                            verb_labels=torch.tensor(verbs, dtype=torch.float))
    return s


def _perfect_outputs(sample, layers=2):
    """Decoder outputs whose queries 3 and 1 reproduce the two interactions exactly."""
    gt = hoi_targets_from_sample(sample)
    factor = torch.tensor([IMG_SHAPE[1], IMG_SHAPE[0]] * 2, dtype=torch.float)
    obj_cls = torch.full((layers, 1, Q, C + 1), -20.0)
    obj_cls[..., C] = 20.0  # no-object everywhere ...
    verb_cls = torch.full((layers, 1, Q, V), -20.0)
    sub = torch.full((layers, 1, Q, 4), 0.5)
    obj = torch.full((layers, 1, Q, 4), 0.5)
    for q, j in ((3, 0), (1, 1)):  # ... except the two matched queries
        obj_cls[..., q, :] = -20.0
        obj_cls[..., q, gt.labels[j]] = 20.0
        verb_cls[..., q, :] = gt.verb_labels[j] * 40 - 20
        sub[..., q, :] = bbox_xyxy_to_cxcywh(gt.sub_bboxes[j] / factor)
        obj[..., q, :] = bbox_xyxy_to_cxcywh(gt.obj_bboxes[j] / factor)
    return obj_cls, verb_cls, sub, obj, gt


def test_targets_follow_the_data_contract_and_merge_duplicate_pairs():
    s = _sample(sub_ids=(0, 0, 0), obj_ids=(1, 2, 1),
                verbs=((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)))
    gt = hoi_targets_from_sample(s)
    assert len(gt) == 2  # (0, 1) appears twice -> one multi-hot target
    row = [i for i in range(2) if gt.labels[i] == 2][0]
    assert gt.verb_labels[row].tolist() == [1, 0, 1, 0]
    assert gt.obj_bboxes[row].tolist() == [100., 20., 180., 60.]
    assert gt.sub_bboxes[row].tolist() == [10., 10., 60., 90.]
    assert len(hoi_targets_from_sample(s, merge_pairs=False)) == 3


def test_bad_hoi_annotations_give_clear_errors():
    head = _head()
    bad = _sample(sub_ids=(0, 5), obj_ids=(1, 2))
    with pytest.raises(ValueError, match='must index the 3 gt_instances'):
        hoi_targets_from_sample(bad)
    no_hoi = DetDataSample(metainfo=dict(img_shape=IMG_SHAPE))
    no_hoi.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
    with pytest.raises(KeyError, match='gt_hoi'):
        head.loss(torch.zeros(1, 1, Q, D), [no_hoi])
    wrong_v = _sample(verbs=((1, 0, 0), (0, 1, 0)))
    with pytest.raises(ValueError, match='num_verb_classes=4'):
        head.loss(torch.zeros(1, 1, Q, D), [wrong_v])
    with pytest.raises(ValueError, match='use_sigmoid=False'):
        _head(loss_obj_cls=dict(type='CrossEntropyLoss', use_sigmoid=True))


def test_perfect_predictions_have_near_zero_losses_and_errors_are_attributed():
    head = _head()
    s = _sample()
    obj_cls, verb_cls, sub, obj, gt = _perfect_outputs(s)
    losses = head.loss_by_feat(obj_cls, verb_cls, sub, obj, [gt], [s.metainfo])
    assert set(losses) == {f'{p}loss_{n}' for p in ('', 'd0.')
                           for n in ('obj_cls', 'verb_cls', 'sub_bbox', 'obj_bbox', 'sub_iou',
                                     'obj_iou')}
    for name, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-4), name

    # move the object box of one matched query: only the object box terms react
    obj_bad = obj.clone()
    obj_bad[-1, 0, 3, 0] += 0.2
    losses = head.loss_by_feat(obj_cls, verb_cls, sub, obj_bad, [gt], [s.metainfo])
    # weight 2.5 x 0.2 summed, averaged over the 2 interactions with an object
    assert losses['loss_obj_bbox'].item() == pytest.approx(2.5 * 0.2 / 2, rel=1e-3)
    assert losses['loss_obj_iou'] > 0.01
    assert losses['loss_sub_bbox'].item() == pytest.approx(0.0, abs=1e-5)
    assert losses['d0.loss_obj_bbox'].item() == pytest.approx(0.0, abs=1e-5)  # other layer

    # flip a verb: the focal verb loss reacts, normalised by the 3 positive labels
    verb_bad = verb_cls.clone()
    verb_bad[-1, 0, 3] = -verb_bad[-1, 0, 3]
    losses = head.loss_by_feat(obj_cls, verb_bad, sub, obj, [gt], [s.metainfo])
    assert losses['loss_verb_cls'] > 1.0 and losses['loss_obj_cls'] < 1e-4

    # a wrong object class on a matched query: CE, weighted mean with no-object weight 0.1
    cls_bad = obj_cls.clone()
    cls_bad[-1, 0, 1] = cls_bad[-1, 0, 1].roll(1)
    losses = head.loss_by_feat(cls_bad, verb_cls, sub, obj, [gt], [s.metainfo])
    expected = 40.0 / (2 + 0.1 * 3)  # one query off by 40 nats / sum of target weights
    assert losses['loss_obj_cls'].item() == pytest.approx(expected, rel=1e-3)


def test_loss_backward_on_random_states_and_empty_images():
    torch.manual_seed(0)
    head = _head()
    hs = torch.randn(3, 2, Q, D, requires_grad=True)
    empty = _sample(sub_ids=(), obj_ids=(), verbs=torch.zeros(0, V))
    losses = head.loss(hs, [_sample(), empty])
    assert 'd1.loss_sub_iou' in losses and 'd2.loss_obj_cls' not in losses
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert hs.grad.abs().sum() > 0
    only_empty = head.loss(hs.detach()[:, :1], [empty])
    assert all(torch.isfinite(v) for v in only_empty.values())
    assert only_empty['loss_sub_bbox'].item() == 0.0


def test_detr_checkpoint_initialises_both_box_mlps_and_the_object_classifier():
    head = _head()
    detr_keys = {
        'fc_cls.weight': torch.randn(C + 1, D), 'fc_cls.bias': torch.randn(C + 1),
        'fc_reg.weight': torch.randn(4, D), 'fc_reg.bias': torch.randn(4),
    }
    for name, p in head.sub_reg_ffn.state_dict().items():
        detr_keys[f'reg_ffn.{name}'] = torch.randn_like(p)
    verb_before = head.fc_verb_cls.weight.detach().clone()
    result = head.load_state_dict(detr_keys, strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == ['fc_verb_cls.bias', 'fc_verb_cls.weight']
    torch.testing.assert_close(head.fc_obj_cls.weight, detr_keys['fc_cls.weight'])
    for who in ('sub', 'obj'):
        torch.testing.assert_close(getattr(head, f'{who}_fc_reg').weight,
                                   detr_keys['fc_reg.weight'])
        torch.testing.assert_close(getattr(head, f'{who}_reg_ffn').layers[0][0].weight,
                                   detr_keys['reg_ffn.layers.0.0.weight'])
    torch.testing.assert_close(head.fc_verb_cls.weight, verb_before)


def test_predict_returns_contract_fields_in_original_coordinates():
    head = _head()
    s = _sample()
    obj_cls, verb_cls, sub, obj, gt = _perfect_outputs(s, layers=1)
    head.forward = lambda hs: (obj_cls, verb_cls, sub, obj)
    (res, ) = head.predict(torch.zeros(1, 1, Q, D), [s])
    assert set(res.keys()) == {'sub_bboxes', 'obj_bboxes', 'obj_labels', 'verb_labels',
                               'scores', 'query_index'}
    assert len(res) == 7
    # best triplets = the 3 positive (pair, verb) labels with score ~1
    top = {(int(res.obj_labels[i]), int(res.verb_labels[i])) for i in range(3)}
    assert top == {(2, 0), (2, 3), (1, 1)}
    assert res.scores[2] > 0.99 and res.scores[3] < 0.01
    i = [k for k in range(3) if int(res.verb_labels[k]) == 1][0]
    torch.testing.assert_close(res.obj_bboxes[i], gt.obj_bboxes[1] / 2, atol=1e-3, rtol=0)
    torch.testing.assert_close(res.sub_bboxes[i], gt.sub_bboxes[1] / 2, atol=1e-3, rtol=0)
