"""Digit scenes (detection): deterministic composition, exact boxes, the COCO files pycocotools
and mmdet read, disjoint glyph splits, the cache and bad arguments."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from mmvitreg.datasets.digit_scenes import (INK_THRESHOLD, SceneStyle, background, compose_scene,
                                            glyph_pool, make_digit_scenes)
from tests._helpers import REPO

CLEAN = dict(noise_std=0.0, clutter=(0, 0))


def test_composition_is_a_pure_function_of_the_seed():
    a_img, a_obj = compose_scene(3)
    b_img, b_obj = compose_scene(3)
    c_img, c_obj = compose_scene(4)
    assert np.array_equal(a_img, b_img) and a_obj == b_obj
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (64, 64, 3)


def test_scenes_vary_in_count_size_and_class():
    style = SceneStyle()
    counts, heights, labels = [], [], []
    for seed in range(200):
        _, objects = compose_scene(seed, style)
        counts.append(len(objects))
        heights += [y2 - y1 for _, (x1, y1, x2, y2) in objects]
        labels += [label for label, _ in objects]
    assert min(counts) <= 2 and max(counts) == style.num_digits[1]
    assert min(heights) <= 9 and max(heights) >= 22  # small and large digits
    assert sorted(set(labels)) == list(range(10))


@pytest.mark.parametrize('seed', range(12))
def test_a_box_is_the_tight_box_of_its_drawn_digit(seed):
    """One digit on a clean background: every pixel the digit changed by more than the ink
    threshold lies inside the box, and the box touches ink on all four sides."""
    style = SceneStyle(num_digits=(1, 1), **CLEAN)
    image, [(_, (x1, y1, x2, y2))] = compose_scene(seed, style)
    bg = background(np.random.default_rng(seed), 64, 64)  # the scene's first random draw
    change = np.abs(image.astype(np.float32) - bg).max(-1)
    inside = np.zeros_like(change, dtype=bool)
    inside[y1:y2, x1:x2] = True
    assert change[~inside].max() <= INK_THRESHOLD * 255 + 1
    visible = INK_THRESHOLD * style.min_contrast * 0.5
    for border in (change[y1, x1:x2], change[y2 - 1, x1:x2], change[y1:y2, x1],
                   change[y1:y2, x2 - 1]):
        assert border.max() > visible


def test_overlaps_are_partial():
    style = SceneStyle()
    for seed in range(100):
        _, objects = compose_scene(seed, style)
        boxes = [b for _, b in objects]
        for i, (ax1, ay1, ax2, ay2) in enumerate(boxes):
            for j, (bx1, by1, bx2, by2) in enumerate(boxes):
                iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
                if i != j and iw > 0 and ih > 0:
                    assert iw * ih <= style.max_covered * (ax2 - ax1) * (ay2 - ay1) + 1e-9


def test_glyph_splits_are_disjoint_and_cover_the_digits():
    pools = {s: glyph_pool(s)[0].reshape(-1, 64) for s in ('train', 'val', 'test')}
    assert [len(p) for p in pools.values()] == [1149, 288, 360]
    keys = {s: {g.tobytes() for g in p} for s, p in pools.items()}
    assert not keys['train'] & keys['test'] and not keys['val'] & keys['test']
    assert not keys['train'] & keys['val']


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('scenes'))
    return root, make_digit_scenes(root, num_train=12, num_val=3, num_test=5, seed=2)


def test_files_are_valid_coco_for_pycocotools(scenes):
    from pycocotools.coco import COCO
    root, paths = scenes
    coco = COCO(paths['test'])
    assert len(coco.getImgIds()) == 5 and len(coco.getCatIds()) == 10
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [str(i) for i in range(10)]
    for img in coco.loadImgs(coco.getImgIds()):
        assert osp.isfile(osp.join(root, 'test', img['file_name']))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x + w <= img['width'] and y + h <= img['height']
            assert ann['area'] == w * h


def test_files_match_the_composed_scenes(scenes):
    import cv2
    root, paths = scenes
    from mmvitreg.datasets.digit_scenes import _split_seed
    image, objects = compose_scene(_split_seed(2, 'val', 1), SceneStyle(), 'val')
    data = json.load(open(paths['val']))
    anns = [a for a in data['annotations'] if a['image_id'] == 2]
    assert [a['category_id'] - 1 for a in anns] == [label for label, _ in objects]
    assert [a['bbox'] for a in anns] == [[x1, y1, x2 - x1, y2 - y1]
                                        for _, (x1, y1, x2, y2) in objects]
    on_disk = cv2.imread(osp.join(root, 'val', '000001.png'))[..., ::-1]
    assert np.array_equal(on_disk, image)  # PNG: lossless


def test_dataset_and_coco_metric_score_the_ground_truth_perfectly(tmp_path):
    import torch
    from mmdet.evaluation import CocoMetric
    from mmengine.registry import init_default_scope

    from mmvitreg.datasets import DigitScenesDataset
    init_default_scope('mmdet')
    root = str(tmp_path / 'ds')
    ds = DigitScenesDataset(split='test', num_train=4, num_val=2, num_test=6, data_root=root,
                            pipeline=[])
    assert len(ds) == 6 and ds.metainfo['classes'][3] == '3'
    metric = CocoMetric(ann_file=osp.join(root, 'annotations/instances_test.json'))
    metric.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        boxes = torch.tensor([inst['bbox'] for inst in info['instances']], dtype=torch.float32)
        labels = torch.tensor([inst['bbox_label'] for inst in info['instances']])
        metric.process({}, [dict(img_id=info['img_id'], ori_shape=(64, 64), pred_instances=dict(
            bboxes=boxes, scores=torch.ones(len(boxes)), labels=labels))])
    assert metric.evaluate(len(ds))['coco/bbox_mAP'] == pytest.approx(1.0)


def test_the_cache_is_written_once_and_follows_its_parameters(tmp_path):
    from mmvitreg.datasets import DigitScenesDataset
    root = str(tmp_path / 'cache')
    DigitScenesDataset(split='val', num_train=2, num_val=2, num_test=2, data_root=root,
                       pipeline=[])
    stamp = osp.join(root, 'PARAMS.json')
    first = os.stat(stamp).st_mtime_ns
    DigitScenesDataset(split='test', num_train=2, num_val=2, num_test=2, data_root=root,
                       pipeline=[])
    assert os.stat(stamp).st_mtime_ns == first  # same parameters: nothing rewritten
    ds = DigitScenesDataset(split='test', num_train=2, num_val=2, num_test=3, data_root=root,
                            pipeline=[])
    assert len(ds) == 3 and json.load(open(stamp))['num_test'] == 3


def test_concurrent_first_use_writes_one_complete_copy(tmp_path):
    """Two processes (e.g. two benchmark jobs) reading a missing cache at once: both see the
    complete data set, and it was written by one of them."""
    code = ('import sys; from mmvitreg.datasets import DigitScenesDataset as D; '
            "ds = D(split='train', num_train=40, num_val=1, num_test=1, data_root=sys.argv[1], "
            'pipeline=[]); print(len(ds))')
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    root = str(tmp_path / 'shared')
    procs = [subprocess.Popen([sys.executable, '-c', code, root], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip().splitlines()[-1] for o in outs] == ['40', '40']
    assert not osp.exists(root + '.tmp')
    assert len(os.listdir(osp.join(root, 'train'))) == 40


@pytest.mark.parametrize('kwargs, message', [
    (dict(style=dict(digit_height=(9, 80))), r'digit_height \(9, 80\) does not fit'),
    (dict(style=dict(num_digits=(3, 2))), r'num_digits must be \(lo, hi\)'),
    (dict(style=dict(colour=1)), r"unknown scene style key\(s\) \['colour'\]"),
    (dict(num_test=-1), 'num_test must be an integer >= 0, got -1'),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        make_digit_scenes(str(tmp_path), num_train=1, num_val=1, **{'num_test': 1, **kwargs})
    assert '\n' not in str(info.value)


def test_bad_split_is_an_error(tmp_path):
    from mmvitreg.datasets import DigitScenesDataset
    with pytest.raises(ValueError, match="split must be one of .* got 'tset'"):
        DigitScenesDataset(split='tset', data_root=str(tmp_path))
