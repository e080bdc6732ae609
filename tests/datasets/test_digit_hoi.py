"""Digit HOI: verbs that are exact functions of the pair, the HICO-DET files the project's loader
reads, the class table with its rare split, and the metric on the data set's own classes."""
import json
import os.path as osp
from collections import Counter

import numpy as np
import pytest

from mmvitreg.datasets.digit_hoi import (DIGIT_HOI_VERBS, HOIStyle, compose_hoi_scene,
                                         digit_hoi_table, make_digit_hoi, pair_verbs)
from mmvitreg.datasets.hico_meta import HOIClassTable

LEFT, RIGHT, ABOVE, BELOW, TOUCH, LARGER = range(6)
RING = (20, 20, 36, 36)  # 16 px ring: near <= 8 px gap, far > 16 px


@pytest.mark.parametrize('digit, verbs', [
    ((8, 24, 16, 32), [LEFT]),                    # 4 px left of the ring
    ((40, 22, 48, 32), [RIGHT]),                  # 4 px right
    ((24, 8, 32, 16), [ABOVE]),
    ((24, 40, 32, 48), [BELOW]),
    ((32, 24, 42, 34), [RIGHT, TOUCH]),           # overlapping the right edge
    ((38, 10, 60, 46), [RIGHT, LARGER]),          # much larger, 2 px gap
    ((56, 24, 62, 32), []),                       # 20 px away: no interaction
    ((45, 24, 51, 32), None),                     # 8 < gap <= 16: ambiguous
    ((37, 24, 45, 32), None),                     # 1 px gap: barely touching
    ((38, 38, 46, 46), None),                     # diagonal offset
    ((38, 19, 56, 37), None),                     # area ratio between 1 and 1.6
])
def test_pair_verbs_follow_the_geometry(digit, verbs):
    assert pair_verbs(RING, digit) == verbs


def test_scene_labels_are_exact_functions_of_the_drawn_boxes():
    """Every near (ring, digit) pair is annotated with exactly the verbs its boxes imply and far
    pairs with none: a detector has to relate the two boxes, not classify one."""
    style, seen = HOIStyle(), Counter()
    for seed in range(150):
        _, boxes, hois = compose_hoi_scene(seed, hoi=style)
        rings = [i for i, (label, _) in enumerate(boxes) if label == 0]
        assert rings
        annotated = {}
        for s, o, v in hois:
            assert boxes[s][0] == 0 and boxes[o][0] >= 1
            annotated.setdefault((s, o), []).append(v)
        for r in rings:
            for j, (label, box) in enumerate(boxes):
                if label >= 1:
                    verbs = pair_verbs(boxes[r][1], box, style)
                    assert verbs is not None  # ambiguous geometry never drawn
                    assert sorted(annotated.get((r, j), [])) == sorted(verbs)
        seen.update(v for _, _, v in hois)
    assert set(seen) == set(range(6))  # every verb occurs


def test_composition_is_deterministic():
    a, b = compose_hoi_scene(5), compose_hoi_scene(5)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.fixture(scope='module')
def hoi_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('digit_hoi'))
    return root, make_digit_hoi(root, num_train=150, num_val=4, num_test=40, seed=1,
                                hoi_style=dict(rare_below=6))


def test_files_are_read_by_the_hico_loader_with_the_class_table(hoi_root):
    from mmvitreg.datasets import HICODetDataset
    root, paths = hoi_root
    ds = HICODetDataset(data_root=root, ann_file='annotations/test_hico.json',
                        data_prefix=dict(img='images/test/'), test_mode=True,
                        class_table='annotations/hoi_classes.json', pipeline=[])
    assert len(ds) == 40
    assert ds.metainfo['verb_classes'] == DIGIT_HOI_VERBS
    assert ds.metainfo['classes'][:3] == ('ring', '0', '1')
    table = ds.hoi_table
    assert table.num_hoi_classes == 60 and table.hoi_names[11] == 'right_of 1'
    entries = json.load(open(paths['test']))
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert osp.isfile(info['img_path'])
        raw = entries[i]
        assert [inst['bbox_label'] for inst in info['instances']] == \
            [a['category_id'] - 1 for a in raw['annotations']]
        assert [(h['subject_id'], h['object_id'], h['verb_labels'][0]) for h in info['hois']] \
            == [(h['subject_id'], h['object_id'], h['category_id'] - 1)
                for h in raw['hoi_annotation']]


def test_rare_split_counts_training_instances_and_test_is_balanced(hoi_root):
    root, paths = hoi_root
    table = HOIClassTable.from_file(paths['class_table'])
    counts = np.zeros(60, int)
    for entry in json.load(open(paths['train'])):
        for h in entry['hoi_annotation']:
            counts[h['hoi_category_id'] - 1] += 1
    assert table.rare.tolist() == (counts < 6).tolist()
    assert 0 < table.rare.sum() < 60
    # interacting digits follow weights (k + 1) ** -0.5 in training: a 3.2x head-to-tail ratio
    partners = Counter(e['annotations'][h['object_id']]['category_id']
                       for e in json.load(open(paths['train'])) for h in e['hoi_annotation'])
    assert max(partners.values()) > 2 * min(partners.values())  # long tail


def test_metric_scores_ground_truth_on_the_datasets_own_classes(hoi_root):
    """GT as predictions: 100 % over the 60 classes (with HICO-DET's 600-class table the same
    predictions would be no class at all)."""
    import torch

    from mmvitreg.datasets import HICODetDataset
    from mmvitreg.evaluation.metrics import HICODetMetric
    root, _ = hoi_root
    ds = HICODetDataset(data_root=root, ann_file='annotations/test_hico.json',
                        data_prefix=dict(img='images/test/'), test_mode=True,
                        class_table='annotations/hoi_classes.json', pipeline=[])
    metric = HICODetMetric(classes_without_gt='ignore')
    metric.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        gt = info['hoi_gt']
        sub, obj, verb = gt['hois'].T
        metric.process({}, [dict(file_name=info['file_name'], img_id=i, hoi_gt=gt, pred_hoi=dict(
            sub_bboxes=torch.as_tensor(gt['bboxes'][sub]),
            obj_bboxes=torch.as_tensor(gt['bboxes'][obj]),
            obj_labels=torch.as_tensor(gt['labels'][obj]),
            verb_labels=torch.as_tensor(verb), scores=torch.ones(len(verb))))])
    result = metric.evaluate(len(ds))
    assert result['hico/mAP'] == pytest.approx(1.0)
    assert metric.last_result.ap.shape == (60, )


def test_digit_hoi_dataset_generates_on_first_use(tmp_path):
    from mmvitreg.datasets import DigitHOIDataset
    ds = DigitHOIDataset(split='val', num_train=30, num_val=5, num_test=5, seed=3,
                         data_root=str(tmp_path / 'h'), pipeline=[])
    assert len(ds) == 5 and ds.hoi_table.num_verbs == 6
    assert ds.get_data_info(0)['hoi_num_verbs'] == 6
    assert digit_hoi_table().category_ids.tolist() == list(range(1, 12))


@pytest.mark.parametrize('hoi_style, message', [
    (dict(subjects=(0, 1)), r'subjects must be \(lo, hi\) integers with 1 <= lo'),
    (dict(near_gap=float('nan')), 'near_gap must be a finite number >= 0, got nan'),
    (dict(dominance=1.0), 'dominance and larger_ratio must be > 1'),
    (dict(size=3), r"unknown HOI style key\(s\) \['size'\]"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, hoi_style, message):
    with pytest.raises(ValueError, match=message) as info:
        make_digit_hoi(str(tmp_path), 1, 1, 1, hoi_style=hoi_style)
    assert '\n' not in str(info.value)
