"""HOILocalVisualizer, select_triplets and the --show-dir config set-up."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmvitreg.datasets.hico_meta import hico_meta
from mmvitreg.visualization import (HOILocalVisualizer, enable_show_dir, is_hoi_config,
                                    select_triplets)
from tests._helpers import REPO

META = hico_meta()
RIDE, BICYCLE = META.verb_names.index('ride'), META.object_names.index('bicycle')
HOLD = META.verb_names.index('hold')


def pred_hoi():
    """Three triplets: two verbs on one pair (0.9, 0.6) and one on another pair (0.2)."""
    sub = [[10, 10, 60, 110], [10, 10, 60, 110], [120, 20, 150, 100]]
    obj = [[70, 60, 130, 110], [70, 60, 130, 110], [150, 10, 190, 40]]
    return InstanceData(sub_bboxes=torch.tensor(sub, dtype=torch.float32),
                        obj_bboxes=torch.tensor(obj, dtype=torch.float32),
                        obj_labels=torch.tensor([BICYCLE, BICYCLE, BICYCLE]),
                        verb_labels=torch.tensor([HOLD, RIDE, RIDE]),
                        scores=torch.tensor([0.6, 0.9, 0.2]))


def grey(h=120, w=200):
    return np.full((h, w, 3), 128, dtype=np.uint8)


def test_select_triplets_sorts_filters_and_checks():
    trip = select_triplets(pred_hoi(), topk=2)
    assert np.allclose(trip['scores'], [0.9, 0.6]) and trip['verb_labels'].tolist() == [RIDE, HOLD]
    assert len(select_triplets(pred_hoi(), topk=10, score_thr=0.5)['scores']) == 2
    assert len(select_triplets(dict(pred_hoi().to_dict()), score_thr=0.95)['scores']) == 0
    with pytest.raises(KeyError, match=r"lacks \['scores'\]"):
        select_triplets({k: v for k, v in pred_hoi().to_dict().items() if k != 'scores'})
    with pytest.raises(ValueError, match='topk must be >= 1, got 0'):
        select_triplets(pred_hoi(), topk=0)


def test_draws_boxes_line_and_labels(monkeypatch):
    vis = HOILocalVisualizer(name='test_hoi_draw')
    texts = []
    original = vis.draw_texts
    monkeypatch.setattr(vis, 'draw_texts', lambda t, *a, **k: texts.append(t) or original(
        t, *a, **k))
    image = grey()
    out = vis.draw_hoi(image, pred_hoi(), score_thr=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.abs(out.astype(int) - image).sum(-1) > 30
    assert changed[10, 30] and changed[110, 30]          # subject box edges
    assert changed[60, 100]                               # object box top edge
    assert not changed[25, 170]                           # the 0.2 triplet is below threshold
    # one label block for the pair, both verbs with object name and score, best first
    assert texts == [['ride bicycle 0.90\nhold bicycle 0.60']]
    # nothing above the threshold: the picture is the input
    assert np.array_equal(vis.draw_hoi(image, pred_hoi(), score_thr=0.95), image)


def test_add_datasample_writes_the_picture(tmp_path):
    vis = HOILocalVisualizer(name='test_hoi_add', topk=1)
    sample = DetDataSample()
    sample.pred_hoi = pred_hoi()
    out_file = str(tmp_path / 'sub' / 'pic.jpg')
    image = grey()
    vis.add_datasample('x', image, sample, out_file=out_file)
    written = mmcv.imread(out_file, channel_order='rgb')
    assert written.shape == image.shape
    assert np.abs(written.astype(int) - image).max() > 50


def test_enable_show_dir(tmp_path):
    hoi = Config.fromfile(
        osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py'))
    assert is_hoi_config(hoi)
    out = enable_show_dir(hoi, 'pics')
    assert out == osp.abspath('pics')
    hook = hoi.default_hooks.visualization
    assert hook.type == 'DetVisualizationHook' and hook.draw and hook.test_out_dir == out
    assert hook.score_thr == 0.0 and hoi.visualizer.type == 'HOILocalVisualizer'
    digits = Config.fromfile(osp.join(REPO, 'configs', 'vit',
                                      'vit-tiny-p4_1xb32-15e_digits-16px.py'))
    assert not is_hoi_config(digits)
    enable_show_dir(digits, str(tmp_path))
    assert digits.default_hooks.visualization.enable
    assert digits.default_hooks.visualization.out_dir == str(tmp_path)
    with pytest.raises(ValueError, match="default_scope 'mmdet' or 'mmpretrain', got 'mmseg'"):
        enable_show_dir(Config(dict(default_scope='mmseg')), 'x')
