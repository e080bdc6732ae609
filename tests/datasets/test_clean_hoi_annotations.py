"""CleanHOIAnnotations: QPIC's training-annotation cleaning, with pair indices kept right."""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmvitreg.datasets.transforms import CleanHOIAnnotations, LoadHOIAnnotations, PackHOIInputs

# image 100 wide x 80 high
BOXES = [
    [5, 5, 30, 60],      # 0 person, valid
    [60, 50, 40, 70],    # 1 inverted in x (x2 < x1): dropped, with pair (0, 1)
    [70, 10, 130, 90],   # 2 person, sticks out right/bottom: clamped to [70, 10, 100, 80]
    [-20, 30, 10, 45],   # 3 sticks out left: clamped to [0, 30, 10, 45]
    [110, 5, 140, 20],   # 4 entirely right of the image: zero width after clamping, dropped
    [50, 20, 50, 40],    # 5 zero width: dropped
]
LABELS = [0, 3, 0, 7, 9, 11]
PAIRS = [(0, 1, [1]), (0, 3, [2, 5]), (2, 3, [4]), (2, 4, [8]), (5, 0, [6]), (2, 0, [10])]


def load(boxes=BOXES, labels=LABELS, pairs=PAIRS, shape=(80, 100)):
    results = dict(img=np.zeros(shape + (3, ), np.uint8), img_shape=shape, ori_shape=shape,
                   img_path='x.jpg',
                   instances=[dict(bbox=b, bbox_label=lab, ignore_flag=0)
                              for b, lab in zip(boxes, labels)],
                   hois=[dict(subject_id=s, object_id=o, verb_labels=v) for s, o, v in pairs])
    return LoadHOIAnnotations()(results)


def pairs_of(r):
    """Pairs as (subject box, object box, verbs) in coordinates: independent of indices."""
    boxes = r['gt_bboxes'].tensor.tolist()
    return [(boxes[s], boxes[o], np.flatnonzero(v).tolist())
            for s, o, v in zip(r['gt_hoi_sub_ids'], r['gt_hoi_obj_ids'], r['gt_hoi_verbs'])]


def test_clamps_drops_degenerate_boxes_with_their_pairs_and_remaps_indices():
    r = CleanHOIAnnotations()(load())
    assert r['gt_bboxes'].tensor.tolist() == [[5, 5, 30, 60], [70, 10, 100, 80],
                                              [0, 30, 10, 45]]
    assert r['gt_bboxes_labels'].tolist() == [0, 0, 7]
    assert r['gt_ignore_flags'].tolist() == [False, False, False]
    # pairs using boxes 1, 4 or 5 are gone; the others point to the new box positions
    assert r['gt_hoi_sub_ids'].tolist() == [0, 1, 1]
    assert r['gt_hoi_obj_ids'].tolist() == [2, 2, 0]
    assert pairs_of(r) == [([5, 5, 30, 60], [0, 30, 10, 45], [2, 5]),
                           ([70, 10, 100, 80], [0, 30, 10, 45], [4]),
                           ([70, 10, 100, 80], [5, 5, 30, 60], [10])]
    # the packed sample obeys the data contract: every pair indexes a real box
    sample = PackHOIInputs()(r)['data_samples']
    assert len(sample.gt_instances) == 3
    assert sample.gt_hoi.sub_ids.tolist() == [0, 1, 1]


def test_inverted_box_no_longer_reaches_the_giou_loss():
    from mmdet.models.losses import GIoULoss
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 100
    preds = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 60 + 1], dim=1)
    giou = GIoULoss(reduction='none')
    inverted = torch.tensor([[60., 50., 40., 70.]])
    # no prediction gets the GIoU loss of an inverted target below 1: an unlearnable target
    assert giou(preds, inverted.expand(500, 4)).min() > 1.0
    r = CleanHOIAnnotations()(load())
    boxes = r['gt_bboxes'].tensor
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    loss = giou(boxes, boxes)  # every remaining target is reachable (loss 0 at the target)
    assert torch.allclose(loss, torch.zeros_like(loss), atol=1e-6)


def test_pairs_are_capped_not_boxes():
    boxes = [[i, 0, i + 5, 5] for i in range(0, 60, 6)]          # 10 valid boxes
    pairs = [(0, o, [o]) for o in range(1, 10)]                    # 9 pairs
    r = CleanHOIAnnotations(max_pairs=4)(load(boxes, [0] * 10, pairs))
    assert len(r['gt_bboxes']) == 10                               # boxes untouched
    assert r['gt_hoi_obj_ids'].tolist() == [1, 2, 3, 4]            # first pairs in order
    assert r['gt_hoi_verbs'].shape == (4, 117)
    assert [np.flatnonzero(v).tolist() for v in r['gt_hoi_verbs']] == [[1], [2], [3], [4]]


def test_official_box_truncation_on_request_drops_pairs_of_truncated_boxes():
    boxes = [[i, 0, i + 5, 5] for i in range(0, 60, 6)]
    pairs = [(0, 9, [1]), (0, 2, [2]), (3, 1, [3])]
    r = CleanHOIAnnotations(max_pairs=None, max_boxes=4)(load(boxes, [0] * 10, pairs))
    assert len(r['gt_bboxes']) == 4
    assert pairs_of(r) == [([0, 0, 5, 5], [12, 0, 17, 5], [2]),
                           ([18, 0, 23, 5], [6, 0, 11, 5], [3])]


def test_switches_and_numpy_boxes():
    r = CleanHOIAnnotations(clamp=False, drop_degenerate=False, max_pairs=None)(load())
    assert len(r['gt_bboxes']) == 6 and len(r['gt_hoi_sub_ids']) == 6
    r = load()
    r['gt_bboxes'] = r['gt_bboxes'].tensor.numpy()
    r = CleanHOIAnnotations()(r)
    assert r['gt_bboxes'].tolist() == [[5, 5, 30, 60], [70, 10, 100, 80], [0, 30, 10, 45]]
    assert r['gt_hoi_sub_ids'].tolist() == [0, 1, 1]


@pytest.mark.parametrize('bad', [0, -3, 2.5, True])
def test_bad_caps_are_refused(bad):
    with pytest.raises(ValueError, match='max_pairs must be None or a positive integer'):
        CleanHOIAnnotations(max_pairs=bad)


@pytest.mark.parametrize('cfg_path,num_queries', [
    ('configs/qpic/qpic_r50_8xb2-150e_hico.py', 100),
    ('configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py', 100),
    ('configs/qpic/qpic_r50_drloc_8xb2-150e_hico.py', 100),
    ('configs/qpic/qpic_r18-w16_1xb4-300iter_hico-mini.py', 10),
])
def test_qpic_training_pipelines_clean_right_after_loading(repo_root, cfg_path, num_queries):
    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(f'{repo_root}/{cfg_path}')
    dataset = cfg.train_dataloader.dataset
    dataset = dataset.get('dataset', dataset)  # RepeatDataset in the tiny config
    types = [t['type'] for t in dataset.pipeline]
    i = types.index('LoadHOIAnnotations')
    assert types[i + 1] == 'CleanHOIAnnotations'
    assert dataset.pipeline[i + 1].get('max_pairs') == num_queries == cfg.model.num_queries
    assert 'CleanHOIAnnotations' not in [t['type'] for t in cfg.test_dataloader.dataset.pipeline]
