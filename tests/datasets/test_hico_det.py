"""HICO-DET class table, generated data, HICODetDataset loading and its input errors."""
import json
import os.path as osp

import numpy as np
import pytest

from mmvitreg.datasets import HICODetDataset
from mmvitreg.datasets.hico_meta import build_corre_matrix, coco91_to_contiguous, hico_meta
from mmvitreg.testing import make_hico_dataset


# ----------------------------------------------------------------------------- class table
def test_class_table_split_sizes_and_ids():
    meta = hico_meta()
    assert len(meta.rare_ids) == 138 and len(meta.non_rare_ids) == 462
    assert int(meta.n_test_pairs.sum()) == 33405
    assert len(meta.verb_names) == 117 and len(meta.object_names) == 80
    assert meta.object_names[0] == 'person' and meta.coco91_ids[0] == 1
    assert meta.coco91_ids[11] == 13  # COCO id 12 does not exist
    assert coco91_to_contiguous([1, 13, 12, 90]).tolist() == [0, 11, -1, 79]
    assert meta.hoi_names[0] == 'board airplane'
    assert meta.hoi_class(meta.hoi_verb, meta.hoi_object).tolist() == list(range(600))
    corre = build_corre_matrix()
    assert corre.shape == (117, 80) and corre.sum() == 600


# ----------------------------------------------------------------------------- generator
@pytest.fixture(scope='module')
def hico_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('hico'))
    info = make_hico_dataset(root, num_train=6, num_test=3, multi_verb_prob=1.0,
                             pairs_per_image=(2, 2), seed=1)
    return root, info


def test_generator_writes_the_release_layout(hico_root):
    root, info = hico_root
    for rel in ('annotations/trainval_hico.json', 'annotations/test_hico.json',
                'annotations/corre_hico.npy', 'images/train2015/HICO_train2015_00000006.jpg',
                'images/test2015/HICO_test2015_00000003.jpg'):
        assert osp.isfile(osp.join(root, rel)), rel
    train = json.load(open(info['train_ann']))
    assert len(train) == 6
    hoi = train[0]['hoi_annotation'][0]
    assert set(hoi) == {'subject_id', 'object_id', 'category_id', 'hoi_category_id'}
    meta = hico_meta()
    for entry in train:  # the hoi id agrees with the verb and the object box
        for h in entry['hoi_annotation']:
            label = coco91_to_contiguous(entry['annotations'][h['object_id']]['category_id'])
            assert meta.hoi_class(h['category_id'] - 1, label) == h['hoi_category_id'] - 1
    assert np.load(info['corre']).shape == (117, 80)


def test_generator_controls_classes_and_pairs(tmp_path):
    info = make_hico_dataset(str(tmp_path), num_train=5, num_test=0, hoi_classes=[19],
                             pairs_per_image=(3, 3), multi_verb_prob=0.0, write_images=False)
    train = json.load(open(info['train_ann']))
    assert info['hoi_classes'] == [18]
    assert all(len(e['hoi_annotation']) == 3 for e in train)
    assert {h['hoi_category_id'] for e in train for h in e['hoi_annotation']} == {19}
    with pytest.raises(ValueError, match='pairs_per_image must be'):
        make_hico_dataset(str(tmp_path), pairs_per_image=(0, 2))


# ----------------------------------------------------------------------------- dataset
def build(root, ann='annotations/trainval_hico.json', **kwargs):
    return HICODetDataset(data_root=root, ann_file=ann,
                          data_prefix=dict(img='images/train2015/'), pipeline=[], **kwargs)


def test_loading_and_merged_verbs(hico_root):
    root, info = hico_root
    ds = build(root)
    assert len(ds) == 6
    assert ds.metainfo['classes'][0] == 'person' and len(ds.metainfo['hoi_classes']) == 600
    raw = json.load(open(info['train_ann']))
    for i in range(len(ds)):
        item = ds.get_data_info(i)
        assert item['img_path'].endswith(raw[i]['file_name'])
        assert len(item['instances']) == len(raw[i]['annotations'])
        pairs = {(h['subject_id'], h['object_id']) for h in raw[i]['hoi_annotation']}
        assert len(item['hois']) == len(pairs)  # one entry per pair
        for pair in item['hois']:
            verbs = {h['category_id'] - 1 for h in raw[i]['hoi_annotation']
                     if (h['subject_id'], h['object_id']) == (pair['subject_id'],
                                                              pair['object_id'])}
            assert set(pair['verb_labels']) == verbs
    # multi_verb_prob=1 and several verbs per object: some pair carries two verbs
    assert any(len(p['verb_labels']) > 1 for i in range(len(ds))
               for p in ds.get_data_info(i)['hois'])


def test_test_mode_keeps_annotations_as_given(tmp_path):
    info = make_hico_dataset(str(tmp_path), num_train=0, num_test=3, duplicate_prob=1.0,
                             write_images=False)
    ds = HICODetDataset(data_root=str(tmp_path), ann_file='annotations/test_hico.json',
                        test_mode=True, pipeline=[])
    raw = json.load(open(info['test_ann']))
    for i in range(3):
        item = ds.get_data_info(i)
        assert len(item['hois']) == len(raw[i]['hoi_annotation'])
        assert item['hoi_gt']['hois'].shape == (len(raw[i]['hoi_annotation']), 3)
        np.testing.assert_array_equal(item['hoi_gt']['bboxes'],
                                      [a['bbox'] for a in raw[i]['annotations']])


def write_json(tmp_path, data, name='bad.json'):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def entry(**over):
    e = dict(file_name='a.jpg',
             annotations=[dict(bbox=[0, 0, 10, 20], category_id=1),
                          dict(bbox=[5, 5, 15, 15], category_id=2)],
             hoi_annotation=[dict(subject_id=0, object_id=1, category_id=37)])
    e.update(over)
    return e


def test_bad_input_errors_name_the_file_and_entry(tmp_path):
    with pytest.raises(FileNotFoundError, match='annotation file not found: .*missing.json'):
        build(str(tmp_path), ann='missing.json')
    path = write_json(tmp_path, '[{"file_name": "a.jpg",', 'malformed.json')
    with pytest.raises(ValueError, match=r'malformed.json is not valid JSON \(.* line 1'):
        build(str(tmp_path), ann=path)
    cases = [
        (dict(hoi_annotation=[dict(subject_id=0, object_id=2, category_id=37)]),
         r'bad.json entry 1 \(a.jpg\): hoi_annotation\[0\] has object_id 2 out of range '
         r'for 2 boxes'),
        (dict(hoi_annotation=[dict(subject_id=0, object_id=1, category_id=118)]),
         r'entry 1 \(a.jpg\): hoi_annotation\[0\] has verb category_id 118 outside 1..117'),
        (dict(hoi_annotation=[dict(subject_id=0, object_id=1, category_id=0)]),
         'verb category_id 0 outside 1..117'),
        (dict(annotations=[dict(bbox=[0, 0, 1, 1], category_id=1),
                           dict(bbox=[0, 0, 1, 1], category_id=12)]),
         r'entry 1 \(a.jpg\): annotations\[1\] has unknown object category_id 12'),
        (dict(file_name=None), 'bad.json entry 1 has no "file_name" string'),
    ]
    for over, message in cases:
        path = write_json(tmp_path, [entry(), entry(**over)])
        with pytest.raises(ValueError, match=message):
            build(str(tmp_path), ann=path)


def test_skip_image_policy_drops_images_with_bad_indices(tmp_path):
    bad = entry(file_name='b.jpg', hoi_annotation=[dict(subject_id=5, object_id=1,
                                                        category_id=37)])
    path = write_json(tmp_path, [entry(), bad], 'skip.json')
    ds = build(str(tmp_path), ann=path, invalid_hoi='skip_image')
    assert len(ds) == 1 and ds.get_data_info(0)['file_name'] == 'a.jpg'
    with pytest.raises(ValueError, match="invalid_hoi must be 'error' or 'skip_image'"):
        build(str(tmp_path), ann=path, invalid_hoi='drop')


def test_non_finite_boxes_are_errors_and_inverted_ones_only_in_test_mode(tmp_path):
    """NaN/Inf/huge coordinates and huge category ids are one HICOInputError (a ValueError)
    naming the entry and field; an inverted box is an error for test-mode GT (it feeds the
    metric) but stays in training, where CleanHOIAnnotations drops it as QPIC does."""
    from mmvitreg.datasets import HICOInputError
    boxes = lambda first: [dict(bbox=first, category_id=1),  # noqa: E731
                           dict(bbox=[5, 5, 15, 15], category_id=2)]
    for first, message in (([0, float('nan'), 10, 20], 'bbox must be a finite number, got nan'),
                           ([0, 0, float('inf'), 20], 'bbox must be a finite number, got inf'),
                           ([0, 0, 10, 10**400],
                            'bbox must be a finite number, got an integer of 401 digits')):
        path = write_json(tmp_path, [entry(), entry(file_name='b.jpg', annotations=boxes(first))])
        for test_mode in (False, True):
            with pytest.raises(HICOInputError, match=r'entry 1 \(b.jpg\): annotations\[0\] '
                                                     + message):
                build(str(tmp_path), ann=path, test_mode=test_mode)
    huge = entry(annotations=[dict(bbox=[0, 0, 10, 20], category_id=10**30),
                              dict(bbox=[5, 5, 15, 15], category_id=2)])
    with pytest.raises(HICOInputError, match='unknown object category_id 1000000000000'):
        build(str(tmp_path), ann=write_json(tmp_path, [huge]))
    path = write_json(tmp_path, [entry(annotations=boxes([10, 0, 0, 20]))])
    assert len(build(str(tmp_path), ann=path)) == 1
    with pytest.raises(HICOInputError, match=r'annotations\[0\] bbox \[10, 0, 0, 20\] is '
                                             'inverted'):
        build(str(tmp_path), ann=path, test_mode=True)
