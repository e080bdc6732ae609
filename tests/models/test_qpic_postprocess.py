"""QPIC triplet decoding (score = verb prob x object prob, corre mask, top-K, boxes)."""
import pytest
import torch

from mmvitreg.models.heads.qpic_head import load_corre_matrix, qpic_postprocess

NEG = -20.0  # "absent" logit


def _outputs():
    # 3 queries, 2 object classes (+ no-object), 3 verbs
    obj_logits = torch.tensor([[4.0, 0.0, 0.0],      # q0: class 0, prob ~0.96
                               [0.0, 2.0, 0.0],      # q1: class 1, prob ~0.79
                               [0.0, 0.0, 6.0]])     # q2: mostly no-object
    verb_logits = torch.full((3, 3), NEG)
    verb_logits[0, 1] = 3.0
    verb_logits[1, 2] = 2.0
    verb_logits[2, 0] = 5.0
    sub = torch.tensor([[0.5, 0.5, 0.5, 0.5]] * 3)
    obj = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    return obj_logits, verb_logits, sub, obj


def test_scores_are_verb_prob_times_object_prob_sorted():
    obj_logits, verb_logits, sub, obj = _outputs()
    out = qpic_postprocess(obj_logits, verb_logits, sub, obj, img_shape=(100, 200), topk=3)
    obj_prob = obj_logits.softmax(-1)
    expected0 = torch.sigmoid(torch.tensor(3.0)) * obj_prob[0, 0]
    expected1 = torch.sigmoid(torch.tensor(2.0)) * obj_prob[1, 1]
    expected2 = torch.sigmoid(torch.tensor(5.0)) * obj_prob[2, :2].max()
    assert out['scores'].tolist() == pytest.approx(
        sorted([expected0.item(), expected1.item(), expected2.item()], reverse=True))
    assert out['verb_labels'].tolist() == [1, 2, 0]
    assert out['obj_labels'].tolist() == [0, 1, 0]
    assert out['query_index'].tolist() == [0, 1, 2]  # the query each triplet comes from
    # the no-object query scores low despite its confident verb
    assert out['scores'][-1] < 0.01


def test_corre_mask_zeroes_invalid_verb_object_combinations():
    obj_logits, verb_logits, sub, obj = _outputs()
    corre = torch.ones(3, 2)
    corre[1, 0] = 0  # verb 1 is invalid with object class 0 -> q0's best triplet is killed
    out = qpic_postprocess(obj_logits, verb_logits, sub, obj, (100, 200), corre=corre, topk=9)
    first = (out['verb_labels'][0].item(), out['obj_labels'][0].item())
    assert first == (2, 1)
    killed = (out['verb_labels'] == 1) & (out['obj_labels'] == 0)
    assert killed.any() and (out['scores'][killed] == 0).all()
    with pytest.raises(ValueError, match='corre must have shape'):
        qpic_postprocess(obj_logits, verb_logits, sub, obj, (100, 200), corre=torch.ones(2, 3))


def test_topk_limits_the_number_of_triplets():
    obj_logits, verb_logits, sub, obj = _outputs()
    assert len(qpic_postprocess(obj_logits, verb_logits, sub, obj, (10, 10), topk=2)['scores']) \
        == 2
    assert len(qpic_postprocess(obj_logits, verb_logits, sub, obj, (10, 10), topk=100)['scores']) \
        == 9  # Q * V
    with pytest.raises(ValueError, match='topk'):
        qpic_postprocess(obj_logits, verb_logits, sub, obj, (10, 10), topk=0)


def test_boxes_in_original_image_coordinates():
    obj_logits, verb_logits, sub, obj = _outputs()
    # network input 100x200 (h x w) resized from 50x100 -> scale_factor (w, h) = (2, 2)
    out = qpic_postprocess(obj_logits, verb_logits, sub, obj, (100, 200), scale_factor=(2., 2.),
                           topk=3)
    q0 = out['verb_labels'].tolist().index(1)
    # q0 subject: cx .5 cy .5 w .5 h .5 -> (50, 25, 150, 75) px -> / 2
    assert out['sub_bboxes'][q0].tolist() == pytest.approx([25., 12.5, 75., 37.5])
    assert out['obj_bboxes'][q0].tolist() == pytest.approx([0., 0., 50., 25.])
    # q1 object (0.9, 0.9, 0.4, 0.4) leaves the image: clamped to the 200x100 input first
    q1 = out['verb_labels'].tolist().index(2)
    # x: 180 +- 40 -> (140, 220 -> 200); y: 90 +- 20 -> (70, 110 -> 100); then / 2
    assert out["obj_bboxes"][q1].tolist() == pytest.approx([70., 35., 100., 50.])


def test_hico_corre_matrix_from_the_package_and_from_npy(tmp_path):
    corre = load_corre_matrix('hico')
    assert corre.shape == (117, 80) and int(corre.sum()) == 600
    path = tmp_path / 'corre_hico.npy'
    import numpy as np
    np.save(path, corre.numpy())
    torch.testing.assert_close(load_corre_matrix(str(path)), corre)
    with pytest.raises(FileNotFoundError, match='corre must be'):
        load_corre_matrix(str(tmp_path / 'missing.npy'))
