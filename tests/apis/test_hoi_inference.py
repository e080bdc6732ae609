"""init_hoi_model / inference_hoi / hoi_triplets on the tiny QPIC and generated HICO images."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmvitreg.apis import hoi_test_pipeline, hoi_triplets, inference_hoi, init_hoi_model
from mmvitreg.datasets.hico_meta import hico_meta
from mmvitreg.testing import make_hico_dataset
from tests._helpers import REPO

CONFIG = osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('hoi_api')
    info = make_hico_dataset(str(root), num_train=0, num_test=1, seed=1)
    image = osp.join(root, 'images', 'test2015', 'HICO_test2015_00000001.jpg')
    model = init_hoi_model(CONFIG, None)
    ckpt = str(root / 'tiny.pth')
    torch.manual_seed(0)
    for p in model.parameters():  # weights that differ from any fresh initialisation
        p.data.normal_(0, 0.05)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    return info, image, ckpt


def test_checkpoint_is_loaded_and_hico_names_are_set(setup):
    _, _, ckpt = setup
    model = init_hoi_model(CONFIG, ckpt, device='cpu')
    saved = torch.load(ckpt, map_location='cpu')['state_dict']
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert not model.training
    assert list(model.dataset_meta['verb_classes']) == list(hico_meta().verb_names)
    assert len(model.dataset_meta['classes']) == 80
    with pytest.raises(FileNotFoundError, match='checkpoint file not found: nope.pth'):
        init_hoi_model(CONFIG, 'nope.pth')


def test_inference_on_a_file_an_array_and_a_list(setup):
    _, image, ckpt = setup
    model = init_hoi_model(CONFIG, ckpt)
    from_file = inference_hoi(model, image)
    pred = from_file.pred_hoi
    k = len(pred.scores)
    assert k == 100  # test_cfg.max_per_img triplets
    for key, shape in (('sub_bboxes', (k, 4)), ('obj_bboxes', (k, 4)), ('obj_labels', (k,)),
                       ('verb_labels', (k,))):
        assert tuple(pred[key].shape) == shape
    img = mmcv.imread(image)
    from_array = inference_hoi(model, [img])
    assert isinstance(from_array, list) and len(from_array) == 1
    assert torch.allclose(from_array[0].pred_hoi.scores, pred.scores)
    # boxes are in original pixels: the same picture at twice the size gives twice the boxes
    big = inference_hoi(model, mmcv.imrescale(img, 2.0))
    order = torch.argsort(pred.scores, descending=True)[:5]
    big_order = torch.argsort(big.pred_hoi.scores, descending=True)[:5]
    assert torch.allclose(big.pred_hoi.sub_bboxes[big_order], 2 * pred.sub_bboxes[order],
                          atol=4.0)


def test_pipeline_drops_annotations_and_reads_arrays(setup):
    model = init_hoi_model(CONFIG, None)
    types = [t['type'] for t in hoi_test_pipeline(model.cfg, from_array=True)]
    assert types[0] == 'mmdet.LoadImageFromNDArray' and 'LoadHOIAnnotations' not in types
    assert 'LoadHOIAnnotations' in [t['type'] for t in model.cfg.test_dataloader.dataset.pipeline]


def test_triplets_are_named_and_sorted(setup):
    _, image, ckpt = setup
    model = init_hoi_model(CONFIG, ckpt)
    result = inference_hoi(model, image)
    trip = hoi_triplets(result, topk=7, dataset_meta=model.dataset_meta)
    assert len(trip) == 7
    scores = [t['score'] for t in trip]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(result.pred_hoi.scores.max()))
    meta = hico_meta()
    assert all(t['verb'] in meta.verb_names and t['object'] in meta.object_names for t in trip)
    thr = float(np.median(scores))
    assert all(t['score'] >= thr for t in hoi_triplets(result, topk=7, score_thr=thr))
    with pytest.raises(FileNotFoundError, match='image file not found'):
        inference_hoi(model, 'missing.jpg')
