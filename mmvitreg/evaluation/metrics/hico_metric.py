"""HICO-DET mAP (official protocol, Default and Known-Object settings) as an mmengine metric."""
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmvitreg.datasets.hico_det import load_hico_json, parse_hico_entry
from mmvitreg.datasets.hico_meta import HOIClassTable, hico_meta
from mmvitreg.evaluation.functional.hico_io import (dets_from_triplets, format_summary,
                                                    gt_from_images, write_per_class_ap)
from mmvitreg.evaluation.functional.hoi_eval import (AP_METHODS, EVAL_MODES, HOIEvalResult,
                                                     evaluate_hoi)
from mmvitreg.registry import METRICS

__all__ = ['HICODetMetric', 'gt_from_images', 'dets_from_triplets', 'format_summary',
           'write_per_class_ap']


def _np(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _get(obj, key: str, default=None):
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


@METRICS.register_module()
class HICODetMetric(BaseMetric):
    """HICO-DET HOI detection mAP: Full / Rare / Non-rare, Default and Known-Object settings.

    Implements the official MATLAB protocol (see
    :mod:`mmvitreg.evaluation.functional.hoi_eval` for the exact rules and for how QPIC's
    evaluator differs); ``mode='qpic'`` reproduces QPIC's numbers instead.

    The HOI classes and the rare split are those of the data set's class table (``dataset_meta``,
    set by mmengine's evaluator from the data set's metainfo): HICO-DET's 600 classes for
    HICO-DET, a data set's own classes otherwise (:class:`~mmvitreg.datasets.HICODetDataset`
    ``class_table``); mAP is always the mean over all classes of that table.

    Predictions are read from ``data_sample.pred_hoi`` (``sub_bboxes``, ``obj_bboxes``,
    ``obj_labels`` and ``verb_labels`` of the table, ``scores``; original image coordinates).
    GT is read from ``ann_file`` (matched by ``file_name``) when given, else from each
    sample's ``hoi_gt`` meta (kept by :class:`HICODetDataset` in test mode). Results are
    collected on the CPU under DDP; only the evaluated images count.

    Args:
        ann_file: optional ``test_hico.json``.
        mode: ``'official'`` or ``'qpic'``.
        ap_method: ``'11point'`` (official default), ``'11point_drift'`` (qpic default) or
            ``'allpoint'``.
        known_object: also report the Known-Object setting.
        max_per_image: keep the top-k triplets per image (qpic default 100, official all).
        iou_thr: minimum min(IoU_h, IoU_o) of a true positive.
        classes_without_gt: ``'zero'`` (official default: AP 0, counted) or ``'ignore'``.
        per_class_file: write per-class APs to this CSV.

    Reported keys (fractions): ``hico/mAP``, ``hico/mAP_rare``, ``hico/mAP_non_rare``,
    ``hico/mAP_ko``, ``hico/mAP_ko_rare``, ``hico/mAP_ko_non_rare``, ``hico/mRec``.
    """

    default_prefix = 'hico'

    def __init__(self, ann_file: Optional[str] = None, mode: str = 'official',
                 ap_method: Optional[str] = None, known_object: bool = True,
                 max_per_image: Optional[int] = None, iou_thr: float = 0.5,
                 classes_without_gt: Optional[str] = None, per_class_file: Optional[str] = None,
                 backend_args: Optional[dict] = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        if mode not in EVAL_MODES:
            raise ValueError(f'HICODetMetric mode must be one of {EVAL_MODES}, got {mode!r}')
        if ap_method is not None and ap_method not in AP_METHODS:
            raise ValueError(f'HICODetMetric ap_method must be one of {AP_METHODS}, '
                             f'got {ap_method!r}')
        if max_per_image is not None and max_per_image < 1:
            raise ValueError(f'HICODetMetric max_per_image must be >= 1, got {max_per_image}')
        self.ann_file = ann_file
        self.mode = mode
        self.ap_method = ap_method
        self.known_object = known_object
        self.max_per_image = max_per_image
        self.iou_thr = iou_thr
        self.classes_without_gt = classes_without_gt
        self.per_class_file = per_class_file
        self.backend_args = backend_args
        self.last_result: Optional[HOIEvalResult] = None

    @property
    def hoi_table(self) -> HOIClassTable:
        """The class table of ``dataset_meta`` (HICO-DET's when it describes none)."""
        return HOIClassTable.from_metainfo(self.dataset_meta, 'HICODetMetric dataset_meta')

    def process(self, data_batch, data_samples: Sequence) -> None:
        meta = self.hoi_table
        for sample in data_samples:
            pred = _get(sample, 'pred_hoi')
            if pred is None:
                raise ValueError('HICODetMetric needs data_sample.pred_hoi (sub_bboxes, '
                                 'obj_bboxes, obj_labels, verb_labels, scores)')
            scores = _np(_get(pred, 'scores')).astype(np.float64).reshape(-1)
            cls = meta.hoi_class(_np(_get(pred, 'verb_labels')).reshape(-1),
                                 _np(_get(pred, 'obj_labels')).reshape(-1))
            result = dict(
                file_name=_get(sample, 'file_name'),
                img_id=_get(sample, 'img_id'),
                pred=dict(sub=_np(_get(pred, 'sub_bboxes')).astype(np.float64).reshape(-1, 4),
                          obj=_np(_get(pred, 'obj_bboxes')).astype(np.float64).reshape(-1, 4),
                          cls=cls, score=scores))
            if self.ann_file is None:
                gt = _get(sample, 'hoi_gt')
                if gt is None:
                    raise ValueError('HICODetMetric without ann_file needs the "hoi_gt" meta '
                                     'of HICODetDataset(test_mode=True) packed by '
                                     'PackHOIInputs, or set ann_file')
                result['gt'] = {k: _np(gt[k]) for k in ('bboxes', 'labels', 'hois')}
            self.results.append(result)

    def _gt_from_ann_file(self, results: List[dict], table: HOIClassTable) -> List[dict]:
        entries = load_hico_json(self.ann_file, self.backend_args)
        parsed = {}
        for idx, entry in enumerate(entries):
            item = parse_hico_entry(entry, idx, self.ann_file, table=table)
            parsed[item['file_name']] = item
        gts = []
        for res in results:
            if res['file_name'] not in parsed:
                raise ValueError(f'HICODetMetric: image {res["file_name"]!r} is not in '
                                 f'{self.ann_file}')
            gts.append(parsed[res['file_name']])
        if len(results) < len(parsed):
            print_log(f'HICODetMetric: evaluating {len(results)} of the {len(parsed)} images '
                      f'of {self.ann_file}', logger='current')
        return gts

    def compute_metrics(self, results: list) -> Dict[str, float]:
        seen, unique = set(), []
        for res in results:  # guard against images evaluated twice
            key = res['file_name'] if res['file_name'] is not None else res['img_id']
            if key in seen:
                continue
            seen.add(key)
            unique.append(res)
        meta = self.hoi_table
        gts = self._gt_from_ann_file(unique, meta) if self.ann_file else \
            [r['gt'] for r in unique]
        gt, invalid = gt_from_images(gts, meta)
        if invalid:
            print_log(f'HICODetMetric: {invalid} GT HOIs are none of the '
                      f'{meta.num_hoi_classes} classes and were left out', logger='current')
        dets = dets_from_triplets([r['pred'] for r in unique])
        result = evaluate_hoi(gt, dets, meta.hoi_object, meta.rare, mode=self.mode,
                              ap_method=self.ap_method, known_object=self.known_object,
                              max_per_image=self.max_per_image, iou_thr=self.iou_thr,
                              classes_without_gt=self.classes_without_gt,
                              image_names=[r['file_name'] if r['file_name'] is not None
                                           else r['img_id'] for r in unique])
        self.last_result = result
        name = 'HICO-DET' if meta is hico_meta() else f'HOI, {meta.num_hoi_classes} classes'
        print_log('\n' + format_summary(result.summary, f'{name} ({self.mode})'),
                  logger='current')
        if self.per_class_file:
            write_per_class_ap(self.per_class_file, result, meta)
        return {k: float(v) for k, v in result.summary.items()}
