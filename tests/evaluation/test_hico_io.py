"""Fast HICO-DET file reader: the same arrays and errors as the per-entry parser it replaces."""
import json
import random

import numpy as np
import pytest

from mmvitreg.datasets.hico_det import load_hico_json, parse_hico_entry
from mmvitreg.datasets.hico_meta import hico_meta
from mmvitreg.evaluation.functional import (dets_from_file, dets_from_triplets, evaluate_hoi,
                                            gt_from_file, gt_from_images, read_hico_file)
from mmvitreg.testing import make_hico_dataset


def per_entry_reference(ann_path, pred_path):
    """GT and detections as the offline evaluator built them before the fast reader."""
    meta = hico_meta()
    gts, names = [], {}
    for idx, entry in enumerate(load_hico_json(ann_path)):
        item = parse_hico_entry(entry, idx, ann_path)
        names[item['file_name']] = len(gts)
        gts.append(item)
    preds = [dict(sub=np.zeros((0, 4)), obj=np.zeros((0, 4)), cls=np.zeros(0, np.int64),
                  score=np.zeros(0)) for _ in gts]
    for idx, entry in enumerate(load_hico_json(pred_path)):
        item = parse_hico_entry(entry, idx, pred_path, prediction=True)
        hois = item['hois']
        preds[names[item['file_name']]] = dict(
            sub=item['bboxes'][hois[:, 0]], obj=item['bboxes'][hois[:, 1]],
            cls=meta.hoi_class(hois[:, 2], item['labels'][hois[:, 1]]), score=item['scores'])
    gt, invalid = gt_from_images(gts)
    return gt, invalid, dets_from_triplets(preds)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Generated test set (duplicates, 20 classes) and predictions exercising every branch:
    entries shuffled, one image without an entry, one with an empty list, boxes under
    ``annotations`` instead of ``predictions``, integer boxes and scores, verb-object
    combinations outside the 600 classes, tied scores, an invalid GT HOI."""
    root = tmp_path_factory.mktemp('hico')
    info = make_hico_dataset(str(root), num_train=0, num_test=12, hoi_classes=20,
                             pairs_per_image=(1, 4), duplicate_prob=0.5, write_images=False,
                             seed=3)
    ann = json.load(open(info['test_ann']))
    ann[1]['hoi_annotation'].append(dict(subject_id=0, object_id=0, category_id=117))
    with open(info['test_ann'], 'w') as f:
        json.dump(ann, f)
    rng = random.Random(0)
    preds = []
    for i, entry in enumerate(ann[1:], start=1):
        boxes = [dict(b, bbox=[v + rng.uniform(-3, 3) for v in b['bbox']])
                 for b in entry['annotations']]
        hois = [dict(h, score=rng.choice([0.5, rng.random()]))
                for h in entry['hoi_annotation']]
        hois += [dict(subject_id=0, object_id=len(boxes) - 1, category_id=rng.randint(1, 117),
                      score=rng.random()) for _ in range(3)]
        if i == 2:
            hois = []
        e = dict(file_name=entry['file_name'], hoi_prediction=hois)
        if i == 3:
            e['annotations'] = [dict(b, bbox=[int(v) for v in b['bbox']]) for b in boxes]
            for h in hois:
                h['score'] = 1
        else:
            e['predictions'] = boxes
        preds.append(e)
    rng.shuffle(preds)
    pred_path = root / 'pred.json'
    pred_path.write_text(json.dumps(preds))
    return info['test_ann'], str(pred_path), preds


def test_same_arrays_and_map_as_the_per_entry_parser(files):
    ann, pred, _ = files
    gt0, invalid0, dets0 = per_entry_reference(ann, pred)
    gt1, invalid1, names = gt_from_file(read_hico_file(ann))
    dets1 = dets_from_file(read_hico_file(pred, prediction=True), names)
    assert invalid0 == invalid1 == 1 and gt0.num_images == gt1.num_images == 12
    for a, b in ((gt0, gt1), (dets0, dets1)):
        for key in ('img', 'cls', 'sub', 'obj') + (('score',) if a is dets0 else ()):
            x, y = getattr(a, key), getattr(b, key)
            assert x.dtype == y.dtype and np.array_equal(x, y), key
    assert (dets1.cls < 0).any() and len(set(dets1.img.tolist())) == 10
    meta = hico_meta()
    for mode in ('official', 'qpic'):
        r0 = evaluate_hoi(gt0, dets0, meta.hoi_object, meta.rare, mode=mode)
        r1 = evaluate_hoi(gt1, dets1, meta.hoi_object, meta.rare, mode=mode)
        assert np.array_equal(r0.ap, r1.ap) and np.array_equal(r0.ap_ko, r1.ap_ko)
        assert r0.summary == r1.summary and 0 < r1.summary['mAP'] < 1


def write(tmp_path, data, name='bad.json'):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize('edit, message', [
    (lambda e: e['predictions'][0].update(category_id=12),
     'predictions[0] has unknown object category_id 12'),
    (lambda e: e['predictions'][1].update(bbox=[1, 2, 3]),
     'predictions[1] bbox must be [x1, y1, x2, y2]'),
    (lambda e: e['predictions'][0]['bbox'].__setitem__(2, '7'),
     "predictions[0] bbox must be a number, got '7'"),
    (lambda e: e['hoi_prediction'][0].update(object_id=99), 'has object_id 99 out of range'),
    (lambda e: e['hoi_prediction'][0].update(category_id=True),
     'has verb category_id True outside 1..117'),
    (lambda e: e['hoi_prediction'][0].update(score=None), 'score must be a number, got None'),
    (lambda e: e['hoi_prediction'][0].pop('subject_id'), 'has no "subject_id"'),
    (lambda e: e['hoi_prediction'][0].update(hoi_category_id=601),
     'has hoi_category_id 601 outside 1..600'),
])
def test_errors_name_the_entry_and_item(files, tmp_path, edit, message):
    _, _, preds = files
    entry = json.loads(json.dumps([p for p in preds if p.get('predictions')
                                   and p['hoi_prediction']][0]))
    edit(entry)
    path = write(tmp_path, [entry])
    with pytest.raises(ValueError) as exc:
        read_hico_file(path, prediction=True)
    assert message in str(exc.value) and f'{path} entry 0 ({entry["file_name"]})' in \
        str(exc.value)


def test_wrong_hoi_key_is_an_error_naming_the_expected_key(files, tmp_path):
    _, _, preds = files
    entry = dict(preds[0])
    entry['hoi_annotation'] = entry.pop('hoi_prediction')
    path = write(tmp_path, [entry])
    with pytest.raises(ValueError, match=r'entry 0 .* has no "hoi_prediction" list \(it has '
                                         r'"hoi_annotation": predicted HOIs go under '
                                         r'"hoi_prediction"'):
        read_hico_file(path, prediction=True)
    # and a prediction file passed as the annotations
    path = write(tmp_path, preds, 'pred_as_ann.json')
    with pytest.raises(ValueError, match='has "hoi_prediction" but no "hoi_annotation": this '
                                         'is a prediction file'):
        read_hico_file(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='prediction file not found'):
        read_hico_file(str(tmp_path / 'none.json'), prediction=True)
    path = tmp_path / 'x.json'
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match='must contain a JSON list of image entries, got dict'):
        read_hico_file(str(path))
    path.write_text('[{"file_name": "a.jpg",')
    with pytest.raises(ValueError, match='is not valid JSON'):
        read_hico_file(str(path))


def _set_box(entry, key, coord, value):
    entry[key][0]['bbox'][coord] = value


def _invert(entry, key):
    box = entry[key][0]['bbox']
    box[0], box[2] = box[2] + 1, box[0]


# (name, edit of an entry, message); the key is 'predictions' or 'annotations'
BAD_VALUES = [
    ('nan-box', lambda e, k: _set_box(e, k, 2, float('nan')),
     '[0] bbox must be a finite number, got nan'),
    ('inf-box', lambda e, k: _set_box(e, k, 1, float('-inf')),
     '[0] bbox must be a finite number, got -inf'),
    ('huge-int-box', lambda e, k: _set_box(e, k, 3, 10**400),
     '[0] bbox must be a finite number, got an integer of 401 digits'),
    ('inverted-box', _invert, '[0] bbox ['),
    ('huge-category', lambda e, k: e[k][0].update(category_id=10**30),
     f'[0] has unknown object category_id {10**30}'),
    ('negative-category', lambda e, k: e[k][0].update(category_id=-2**70),
     f'[0] has unknown object category_id {-2**70}'),
]
BAD_SCORES = [
    ('nan-score', float('nan'), 'hoi_prediction[0] score must be a finite number, got nan'),
    ('inf-score', float('inf'), 'hoi_prediction[0] score must be a finite number, got inf'),
    ('huge-int-score', 10**400, 'hoi_prediction[0] score must be a finite number, got an '
                                'integer of 401 digits'),
]


def _entry_with_pairs(entries):
    return json.loads(json.dumps([e for e in entries if e.get('hoi_prediction', e.get(
        'hoi_annotation')) and e.get('predictions', e.get('annotations'))][0]))


@pytest.mark.parametrize('name, edit, message', BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
@pytest.mark.parametrize('prediction', [True, False], ids=['pred', 'gt'])
def test_non_finite_inverted_and_out_of_range_values_name_image_and_field(
        files, tmp_path, name, edit, message, prediction):
    from mmvitreg.datasets.hico_json import HICOInputError
    ann_path, _, preds = files
    entries = preds if prediction else json.load(open(ann_path))
    entry = _entry_with_pairs(entries)
    key = 'predictions' if 'predictions' in entry else 'annotations'
    edit(entry, key)
    path = write(tmp_path, [entry])  # json writes NaN / Infinity tokens, as Python reads them
    with pytest.raises(HICOInputError) as exc:
        read_hico_file(path, prediction=prediction)
    text = str(exc.value)
    assert isinstance(exc.value, ValueError) and len(text.splitlines()) == 1
    assert f'{path} entry 0 ({entry["file_name"]}): {key}{message}' in text, text
    if name == 'inverted-box':
        assert 'is inverted (needs x1 <= x2 and y1 <= y2)' in text


@pytest.mark.parametrize('name, score, message', BAD_SCORES, ids=[c[0] for c in BAD_SCORES])
def test_non_finite_scores_name_image_and_field(files, tmp_path, name, score, message):
    from mmvitreg.datasets.hico_json import HICOInputError
    _, _, preds = files
    entry = _entry_with_pairs(preds)
    entry['hoi_prediction'][0]['score'] = score
    path = write(tmp_path, [entry])
    with pytest.raises(HICOInputError) as exc:
        read_hico_file(path, prediction=True)
    assert f'{path} entry 0 ({entry["file_name"]}): {message}' in str(exc.value)


@pytest.mark.parametrize('prediction', [True, False], ids=['pred', 'gt'])
def test_huge_verb_and_object_ids_are_errors_not_overflows(files, tmp_path, prediction):
    from mmvitreg.datasets.hico_json import HICOInputError
    ann_path, _, preds = files
    key = 'hoi_prediction' if prediction else 'hoi_annotation'
    for field, value, message in (('category_id', 10**30, 'verb category_id'),
                                  ('object_id', 10**30, 'object_id'),
                                  ('hoi_category_id', -10**30, 'hoi_category_id')):
        entry = _entry_with_pairs(preds if prediction else json.load(open(ann_path)))
        entry[key][0][field] = value
        path = write(tmp_path, [entry])
        with pytest.raises(HICOInputError) as exc:
            read_hico_file(path, prediction=prediction)
        assert f'{key}[0] has {message} {value}' in str(exc.value)


def test_zero_width_boxes_are_valid(files, tmp_path):
    ann_path, _, _ = files
    entry = _entry_with_pairs(json.load(open(ann_path)))
    box = entry['annotations'][0]['bbox']
    box[2], box[3] = box[0], box[1]
    assert read_hico_file(write(tmp_path, [entry])).boxes[0].tolist() == \
        [box[0], box[1], box[0], box[1]]
