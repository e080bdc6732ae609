"""HICODetMetric on generated HICO-DET data (GT from the samples or from the JSON file)."""
import csv

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from mmvitreg.datasets import HICODetDataset
from mmvitreg.datasets.hico_meta import hico_meta
from mmvitreg.datasets.transforms import LoadHOIAnnotations, PackHOIInputs
from mmvitreg.evaluation.metrics import HICODetMetric
from mmvitreg.testing import make_hico_dataset


@pytest.fixture(scope='module')
def hico_test(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('hico'))
    info = make_hico_dataset(root, num_train=0, num_test=5, pairs_per_image=(1, 3),
                             duplicate_prob=0.5, write_images=False, seed=3)
    ds = HICODetDataset(data_root=root, ann_file='annotations/test_hico.json',
                        data_prefix=dict(img='images/test2015/'), test_mode=True,
                        pipeline=[LoadHOIAnnotations(), PackHOIInputs()])
    samples = [ds[i]['data_samples'] for i in range(len(ds))]
    return info, samples


def perfect_predictions(samples, drop_first=False):
    """Samples (as dicts, like mmengine's evaluator passes them) predicting every GT pair."""
    out = []
    for k, sample in enumerate(samples):
        gt = sample.hoi_gt
        hois = gt['hois']
        if drop_first and k == 0:
            hois = hois[1:]
        pred = InstanceData()
        pred.sub_bboxes = torch.as_tensor(gt['bboxes'][hois[:, 0]], dtype=torch.float32)
        pred.obj_bboxes = torch.as_tensor(gt['bboxes'][hois[:, 1]], dtype=torch.float32)
        pred.obj_labels = torch.as_tensor(gt['labels'][hois[:, 1]])
        pred.verb_labels = torch.as_tensor(hois[:, 2])
        pred.scores = torch.linspace(0.9, 0.5, len(hois))
        sample = sample.clone()
        sample.pred_hoi = pred
        out.append(sample.to_dict())
    return out


def run_metric(metric, preds):
    metric.process({}, preds)
    return metric.compute_metrics(metric.results)


def test_perfect_predictions_score_one_on_the_classes_with_gt(hico_test):
    info, samples = hico_test
    preds = perfect_predictions(samples)
    res = run_metric(HICODetMetric(classes_without_gt='ignore'), preds)
    assert res['mAP'] == pytest.approx(1.0)
    assert res['mAP_ko'] == pytest.approx(1.0)
    metric = HICODetMetric()  # official: the 600 classes count, those without GT with AP 0
    res = run_metric(metric, preds)
    n_cls = int((metric.last_result.npos > 0).sum())
    assert n_cls == len(set(info['hoi_classes']) & set(np.flatnonzero(
        metric.last_result.npos)))
    assert res['mAP'] == pytest.approx(n_cls / 600)
    assert metric.last_result.npos.sum() == info['num_test_pairs']


def test_missing_prediction_lowers_recall_and_ann_file_gives_same_result(hico_test):
    info, samples = hico_test
    preds = perfect_predictions(samples, drop_first=True)
    from_samples = run_metric(HICODetMetric(classes_without_gt='ignore'), preds)
    assert from_samples['mRec'] < 1.0
    from_file = run_metric(HICODetMetric(ann_file=info['test_ann'],
                                         classes_without_gt='ignore'), preds)
    assert from_file == pytest.approx(from_samples, nan_ok=True)


def test_evaluator_prefix_and_per_class_file(hico_test, tmp_path):
    _, samples = hico_test
    out = tmp_path / 'ap.csv'
    with DefaultScope.overwrite_default_scope('mmdet'):  # built by name, as from a config
        evaluator = Evaluator(dict(type='HICODetMetric', mode='qpic', per_class_file=str(out)))
    evaluator.process(perfect_predictions(samples), {})
    res = evaluator.evaluate(len(samples))
    assert set(res) == {'hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare', 'hico/mRec',
                        'hico/mAP_ko', 'hico/mAP_ko_rare', 'hico/mAP_ko_non_rare'}
    assert res['hico/mAP'] == pytest.approx(1.0)  # qpic: mean over classes with GT
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 600 and rows[0]['hoi_id'] == '1'
    assert sum(int(r['rare']) for r in rows) == 138


def test_metric_errors(hico_test):
    info, samples = hico_test
    with pytest.raises(ValueError, match="HICODetMetric mode must be one of"):
        HICODetMetric(mode='matlab')
    with pytest.raises(ValueError, match='needs data_sample.pred_hoi'):
        HICODetMetric().process({}, [samples[0].to_dict()])
    preds = perfect_predictions(samples)
    preds[0]['file_name'] = 'HICO_test2015_99999999.jpg'
    metric = HICODetMetric(ann_file=info['test_ann'])
    metric.process({}, preds)
    with pytest.raises(ValueError, match="image 'HICO_test2015_99999999.jpg' is not in"):
        metric.compute_metrics(metric.results)


def test_invalid_verb_object_predictions_are_ignored(hico_test):
    _, samples = hico_test
    preds = perfect_predictions(samples)
    meta = hico_meta()
    bad = np.flatnonzero(meta.hoi_lookup[:, 0] < 0)[0]  # a verb never used with 'person'
    for p in preds:
        extra = p['pred_hoi']
        n = len(extra['scores'])
        extra['verb_labels'] = torch.cat([extra['verb_labels'], torch.full((n,), int(bad))])
        extra['obj_labels'] = torch.cat([extra['obj_labels'], torch.zeros(n, dtype=torch.long)])
        for key in ('sub_bboxes', 'obj_bboxes'):
            extra[key] = torch.cat([extra[key], extra[key]])
        extra['scores'] = torch.cat([extra['scores'], torch.ones(n)])
    res = run_metric(HICODetMetric(classes_without_gt='ignore'), preds)
    assert res['mAP'] == pytest.approx(1.0)
