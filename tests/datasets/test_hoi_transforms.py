"""Pair-aware HOI transforms: boxes follow the image, pairs follow their boxes."""
import numpy as np
import pytest
from mmdet.datasets.transforms import RandomFlip
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvitreg.datasets.transforms import HOIRandomCrop, LoadHOIAnnotations, PackHOIInputs
from mmvitreg.testing import make_hico_dataset

# four boxes, each painted in its own colour: A (person), B, C (person), D
BOXES = [[5, 5, 30, 60], [35, 10, 55, 30], [60, 5, 85, 60], [88, 40, 99, 70]]
LABELS = [0, 1, 0, 2]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
PAIRS = [(0, 1, [3]), (2, 3, [7, 9]), (0, 3, [11])]  # (subject, object, verbs)


def make_results():
    img = np.zeros((80, 100, 3), dtype=np.uint8)
    for (x1, y1, x2, y2), colour in zip(BOXES, COLOURS):
        img[y1:y2, x1:x2] = colour
    results = dict(img=img, img_shape=(80, 100), ori_shape=(80, 100), img_path='x.jpg',
                   instances=[dict(bbox=b, bbox_label=lab, ignore_flag=0)
                              for b, lab in zip(BOXES, LABELS)],
                   hois=[dict(subject_id=s, object_id=o, verb_labels=v) for s, o, v in PAIRS])
    return LoadHOIAnnotations()(results)


def box_identity(results, i):
    """Which original box the i-th box is, read from the pixels at its centre."""
    x1, y1, x2, y2 = results['gt_bboxes'].tensor[i].tolist()
    pixel = results['img'][int((y1 + y2) / 2), int((x1 + x2) / 2)]
    return COLOURS.index(tuple(int(c) for c in pixel))


def check_consistent(results):
    ids = [box_identity(results, i) for i in range(len(results['gt_bboxes']))]
    assert [LABELS[k] for k in ids] == results['gt_bboxes_labels'].tolist()
    kept_pairs = []
    for s, o, verbs in zip(results['gt_hoi_sub_ids'], results['gt_hoi_obj_ids'],
                           results['gt_hoi_verbs']):
        kept_pairs.append((ids[s], ids[o], np.flatnonzero(verbs).tolist()))
    expected = [p for p in PAIRS if p[0] in ids and p[1] in ids]  # dropped iff a box is gone
    assert kept_pairs == expected
    return ids


def test_load_hoi_annotations():
    r = make_results()
    assert r['gt_hoi_sub_ids'].tolist() == [0, 2, 0]
    assert r['gt_hoi_verbs'].shape == (3, 117) and r['gt_hoi_verbs'].dtype == np.float32
    assert r['gt_hoi_verbs'][1].nonzero()[0].tolist() == [7, 9]
    check_consistent(r)


def test_flip_moves_boxes_with_the_image_and_keeps_pairs():
    r = RandomFlip(prob=1.0)(make_results())
    assert r['flip'] is True
    assert r['gt_bboxes'].tensor[0].tolist() == [70, 5, 95, 60]  # x -> 100 - x
    check_consistent(r)


def test_crop_drops_pairs_whose_box_is_cut_away():
    crop = HOIRandomCrop(crop_type='absolute', crop_size=(60, 80))  # (w, h) in mmdet
    crop._rand_offset = lambda margin: (0, 0)  # keep x in [0, 60): C and D leave the crop
    r = crop(make_results())
    assert r['img'].shape[:2] == (80, 60)
    assert check_consistent(r) == [0, 1]
    assert r['gt_hoi_sub_ids'].tolist() == [0] and r['gt_hoi_obj_ids'].tolist() == [1]


@pytest.mark.parametrize('seed', range(8))
def test_random_size_crop_keeps_pairs_consistent(seed):
    np.random.seed(seed)
    crop = HOIRandomCrop(crop_type='absolute_range', crop_size=(30, 70))
    r = crop(make_results())
    h, w = r['img'].shape[:2]
    boxes = r['gt_bboxes'].tensor
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    check_consistent(r)


def test_pack_hoi_inputs_and_ignored_boxes():
    r = make_results()
    packed = PackHOIInputs()(r)
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, 80, 100)
    assert sample.gt_instances.labels.tolist() == LABELS
    assert sample.gt_hoi.sub_ids.tolist() == [0, 2, 0]
    assert sample.gt_hoi.obj_ids.tolist() == [1, 3, 3]
    assert tuple(sample.gt_hoi.verb_labels.shape) == (3, 117)
    r = make_results()
    r['gt_ignore_flags'] = np.array([False, False, True, False])  # C ignored
    sample = PackHOIInputs()(r)['data_samples']
    assert sample.gt_instances.labels.tolist() == [0, 1, 2]
    assert sample.gt_hoi.sub_ids.tolist() == [0, 0]  # the pair of C is dropped
    assert sample.gt_hoi.obj_ids.tolist() == [1, 2]


def test_config_pipelines_on_generated_data(tmp_path, repo_root):
    from mmdet.registry import DATASETS

    import mmvitreg  # noqa: F401
    root = str(tmp_path)
    make_hico_dataset(root, num_train=4, num_test=2, pairs_per_image=(1, 3), seed=2)
    cfg = Config.fromfile(f'{repo_root}/configs/_base_/datasets/hico_det.py')
    np.random.seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        for loader in (cfg.train_dataloader, cfg.test_dataloader):
            loader.dataset.data_root = root
            ds = DATASETS.build(loader.dataset)
            for i in range(len(ds)):
                out = ds[i]
                sample = out['data_samples']
                n = len(sample.gt_instances)
                hoi = sample.gt_hoi
                assert len(hoi.sub_ids) == 0 or int(max(hoi.sub_ids.max(),
                                                        hoi.obj_ids.max())) < n
                assert (sample.gt_instances.labels[hoi.sub_ids] == 0).all()
                _, h, w = out['inputs'].shape
                assert min(h, w) >= 384 or max(h, w) == 1333
    assert 'hoi_gt' in sample.metainfo and sample.metainfo['scale_factor'][0] > 1


def test_base_config_keeps_images_without_hois_and_its_pipeline_runs_on_them(tmp_path,
                                                                             repo_root):
    """As QPIC's training set: images without HOIs (with or without boxes) are kept; the
    pair-aware training pipeline (clean, flip, jitter, resize/crop) gives them empty targets."""
    from mmdet.registry import DATASETS

    import mmvitreg  # noqa: F401
    from tests._helpers import empty_some_hico_train_images
    root = str(tmp_path)
    make_hico_dataset(root, num_train=4, num_test=1, seed=3)
    empty_some_hico_train_images(root)
    cfg = Config.fromfile(f'{repo_root}/configs/_base_/datasets/hico_det.py')
    cfg.train_dataloader.dataset.data_root = root
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DATASETS.build(cfg.train_dataloader.dataset)
        assert len(ds) == 4
        np.random.seed(0)
        for _ in range(6):  # both RandomChoice branches (the crop one included)
            for i in (1, 2):
                sample = ds[i]['data_samples']
                assert len(sample.gt_hoi.sub_ids) == 0
                assert tuple(sample.gt_hoi.verb_labels.shape) == (0, 117)
            assert len(ds[2]['data_samples'].gt_instances) == 0
        # the option to drop them still works
        cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True)
        assert len(DATASETS.build(cfg.train_dataloader.dataset)) == 2
