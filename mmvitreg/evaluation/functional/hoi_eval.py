"""Vectorised HICO-DET evaluation (the official MATLAB protocol, plus a QPIC compatibility mode).

Official protocol (``ywchao/ho-rcnn``, ``evaluation/eval_one.m`` + ``VOCevaldet_bboxpair.m``):

1. One AP per HOI class, over all 600 classes; mAP is the mean over the 600 (Full), the 138
   rare and the 462 non-rare classes. A class without detections has AP 0 and still counts
   (so does a class without ground truth: MATLAB's recall is NaN there and the AP sums to 0).
2. The GT of a class is every annotated (human box, object box) pair of that class in the
   test set; near-duplicates and exact duplicates count as separate positives.
3. The detections of a class are sorted by decreasing score over the whole test set (stable:
   ties keep image order, then the order inside the image). A detection is compared with the
   GT pairs of *its class in its image*: overlap = min(IoU_human, IoU_object); the GT pair with
   the highest overlap is taken (the first one on ties). If that overlap is >= 0.5 and the GT
   pair is still unmatched, the detection is a TP and the pair becomes matched; otherwise
   (already matched, below threshold, or no GT of the class in the image) it is a FP. The
   already-matched GT pair is *not* replaced by the next best one.
4. IoU uses the "+1 pixel" convention: widths are ``x2 - x1 + 1``, the intersection counts
   when ``min(x2) - max(x1) + 1 > 0``.
5. AP is VOC2007's 11-point interpolation: the mean over recall thresholds
   t = 0, 0.1, ..., 1.0 of the maximum precision at recall >= t (0 when unreached). Here the
   thresholds are exact: ``recall >= k/10`` is tested as ``10 * tp >= k * npos`` in integers,
   so a recall of exactly 3/10 reaches t = 0.3 (a float grid ``0:0.1:1`` does not: its third
   element is 0.30000000000000004).
6. Known-Object (KO) setting: for a class with object o only the images whose GT contains an
   HOI with object o are evaluated (detections in other images are discarded); the GT is the
   same. Which images "contain o" is derived from the annotated HOI pairs (MATLAB uses the
   image-level HICO labels, which also include invisible HOIs without boxes; the JSON release
   has no boxes for those, so they cannot count anywhere).

Where QPIC's evaluator (``datasets/hico_eval.py`` of QPIC and the CDN/GEN-VLKT family) differs,
reproduced by ``mode='qpic'``:

- Only the top-100 (pair, verb) triplets per image are evaluated (scores of verb-object
  combinations outside the 600 classes are first multiplied by the ``corre`` mask, i.e. set to
  0, and still take part in the ranking).
- The recall thresholds drift: ``np.arange(0., 1.1, 0.1)`` gives 0.30000000000000004,
  0.6000000000000001 and 0.7000000000000001, so a recall of exactly 0.3, 0.6 or 0.7 misses its
  threshold.
- IoU: areas and the intersection also use "+1", but boxes whose intersection is empty in
  continuous coordinates (``max(x1) >= min(x2)``, e.g. touching boxes) get IoU 0 where the
  official code counts a 1-pixel-wide intersection.
- The mean runs only over classes that have GT in the evaluated images (identical to the
  official mean on the full test set, where all 600 classes have GT).
- Per-class detections are sorted with an unstable ``np.argsort(-score)``; this module always
  sorts stably, so results can differ only between detections of exactly equal score.

The QPIC module as released does not compute the KO setting; ``mode='qpic'`` reports it with
the QPIC rules above applied to the KO image subsets.

Both the ground truth and the detections must be in the same pixel coordinates (the JSON
release and the metric use original-image coordinates; MATLAB adds 1 to 0-based detections to
meet its 1-based GT, the JSON boxes are already in one space).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

from mmvitreg.datasets.hico_json import HICOInputError

__all__ = ['HOIGroundTruth', 'HOIDetections', 'HOIEvalResult', 'pair_iou', 'match_detections',
           'average_precision', 'topk_per_image', 'evaluate_hoi', 'invalid_boxes', 'EVAL_MODES',
           'AP_METHODS']

EVAL_MODES = ('official', 'qpic')
AP_METHODS = ('11point', '11point_drift', 'allpoint')
QPIC_MAX_PER_IMAGE = 100


def _boxes(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f'{name} must have shape (N, 4), got {arr.shape}')
    return arr


def _ints(arr, name: str, n: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.int64).reshape(-1)
    if n is not None and len(arr) != n:
        raise ValueError(f'{name} must have {n} entries, got {len(arr)}')
    return arr


@dataclass
class HOIGroundTruth:
    """Flat GT pairs of a test set: one row per annotated (human, object, HOI class).

    Attributes:
        img: (G,) image index 0..num_images-1.
        cls: (G,) HOI class index 0..C-1.
        sub: (G, 4) human boxes x1, y1, x2, y2.
        obj: (G, 4) object boxes.
        num_images: number of evaluated images (including images without GT).
    """
    img: np.ndarray
    cls: np.ndarray
    sub: np.ndarray
    obj: np.ndarray
    num_images: int

    def __post_init__(self):
        self.sub = _boxes(self.sub, 'GT subject boxes')
        self.obj = _boxes(self.obj, 'GT object boxes')
        n = len(self.sub)
        self.img = _ints(self.img, 'GT image indices', n)
        self.cls = _ints(self.cls, 'GT classes', n)
        if len(self.obj) != n:
            raise ValueError(f'GT object boxes must have {n} rows, got {len(self.obj)}')
        if n and (self.img.min() < 0 or self.img.max() >= self.num_images):
            raise ValueError(f'GT image indices must be in [0, {self.num_images}), got '
                             f'[{self.img.min()}, {self.img.max()}]')


@dataclass
class HOIDetections:
    """Flat detected triplets: one row per (human box, object box, HOI class, score).

    ``cls`` may be -1 for a (verb, object) combination that is none of the classes: such rows
    are never evaluated but take part in QPIC's top-k selection with score 0.
    Row order is the tie-break order of equal scores (image order, then order in the image).
    """
    img: np.ndarray
    cls: np.ndarray
    sub: np.ndarray
    obj: np.ndarray
    score: np.ndarray

    def __post_init__(self):
        self.sub = _boxes(self.sub, 'detected subject boxes')
        self.obj = _boxes(self.obj, 'detected object boxes')
        n = len(self.sub)
        self.img = _ints(self.img, 'detection image indices', n)
        self.cls = _ints(self.cls, 'detection classes', n)
        self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        if len(self.obj) != n or len(self.score) != n:
            raise ValueError(f'detection arrays must all have {n} rows, got {len(self.obj)} '
                             f'object boxes and {len(self.score)} scores')

    def select(self, keep: np.ndarray) -> 'HOIDetections':
        return HOIDetections(self.img[keep], self.cls[keep], self.sub[keep], self.obj[keep],
                             self.score[keep])


@dataclass
class HOIEvalResult:
    """Per-class results and summary of :func:`evaluate_hoi`.

    ``ap``/``ap_ko``/``recall`` are (C,) arrays; ``npos`` the GT count per class;
    ``summary`` holds fractions in [0, 1]: ``mAP``, ``mAP_rare``, ``mAP_non_rare``,
    ``mAP_ko``, ``mAP_ko_rare``, ``mAP_ko_non_rare``, ``mRec``.
    """
    ap: np.ndarray
    ap_ko: Optional[np.ndarray]
    recall: np.ndarray
    npos: np.ndarray
    summary: Dict[str, float] = field(default_factory=dict)


def pair_iou(boxes1: np.ndarray, boxes2: np.ndarray, mode: str = 'official') -> np.ndarray:
    """Element-wise IoU of two (M, 4) box arrays with the "+1 pixel" convention.

    ``mode='official'`` follows ``VOCevaldet_bboxpair.m`` (intersection counted when
    ``min(x2) - max(x1) + 1 > 0``); ``mode='qpic'`` follows QPIC's ``compute_IOU`` (IoU 0 as
    soon as ``max(x1) >= min(x2)`` or ``max(y1) >= min(y2)``). A non-positive union gives 0.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f'pair_iou mode must be one of {EVAL_MODES}, got {mode!r}')
    b1, b2 = _boxes(boxes1, 'boxes1'), _boxes(boxes2, 'boxes2')
    if b1.shape != b2.shape:
        raise ValueError(f'pair_iou needs boxes of equal shape, got {b1.shape} and {b2.shape}')
    lo = np.maximum(b1[:, :2], b2[:, :2])
    hi = np.minimum(b1[:, 2:], b2[:, 2:])
    wh = hi - lo + 1.0
    if mode == 'official':
        valid = (wh[:, 0] > 0) & (wh[:, 1] > 0)
    else:
        valid = (lo[:, 0] < hi[:, 0]) & (lo[:, 1] < hi[:, 1])
    inter = np.where(valid, wh[:, 0] * wh[:, 1], 0.0)
    area1 = (b1[:, 2] - b1[:, 0] + 1.0) * (b1[:, 3] - b1[:, 1] + 1.0)
    area2 = (b2[:, 2] - b2[:, 0] + 1.0) * (b2[:, 3] - b2[:, 1] + 1.0)
    union = area1 + area2 - inter
    out = np.zeros(len(b1), dtype=np.float64)
    np.divide(inter, union, out=out, where=valid & (union > 0))
    return out


def _small_ints(values: np.ndarray) -> np.ndarray:
    """Cast non-negative group ids to int16 when they fit (numpy radix-sorts those)."""
    if len(values) and values.min() >= -1 and values.max() < 2 ** 15 - 1:
        return values.astype(np.int16)
    return values


def _grouped_score_order(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices sorting rows by group, then decreasing score, then row order.

    Two stable sorts (scores, then a radix sort of the small group ids) instead of a 3-key
    ``lexsort``: the same order.
    """
    by_score = np.argsort(-scores, kind='stable')
    return by_score[np.argsort(_small_ints(groups)[by_score], kind='stable')]


def _class_order(dets: HOIDetections) -> np.ndarray:
    """Indices sorting detections by class, then decreasing score, then row order (stable)."""
    return _grouped_score_order(dets.cls, dets.score)


def match_detections(dets: HOIDetections, gt: HOIGroundTruth, iou_thr: float = 0.5,
                     iou_mode: str = 'official', order: Optional[np.ndarray] = None
                     ) -> np.ndarray:
    """True-positive flag of every detection (rows with ``cls < 0`` are never TP).

    Vectorised form of the greedy assignment of ``VOCevaldet_bboxpair.m``: each detection is
    paired with every GT pair of its class in its image (a flat candidate list built with
    ``searchsorted`` over GT sorted by (image, class)); its best GT pair is the one of highest
    min(IoU_h, IoU_o), first on ties. Because the official rule never falls back to a second
    best GT pair, a detection is a TP iff its best overlap is >= ``iou_thr`` and it is the
    first detection, in the class's score order, whose best GT pair is that pair.
    ``order`` may pass a precomputed :func:`_class_order` of ``dets``.
    """
    n_det = len(dets.score)
    tp = np.zeros(n_det, dtype=bool)
    if n_det == 0 or len(gt.cls) == 0:
        return tp
    n_cls = int(max(dets.cls.max(), gt.cls.max())) + 2
    gkey = gt.img * n_cls + gt.cls
    gsort = np.argsort(gkey, kind='stable')
    gkey_sorted = gkey[gsort]
    dkey = np.where(dets.cls >= 0, dets.img * n_cls + dets.cls, -1)
    start = np.searchsorted(gkey_sorted, dkey, side='left')
    count = np.searchsorted(gkey_sorted, dkey, side='right') - start
    count[dets.cls < 0] = 0
    total = int(count.sum())
    if total == 0:
        return tp
    first = np.cumsum(count) - count  # offset of each detection's candidates in the flat list
    det_rep = np.repeat(np.arange(n_det), count)
    gt_rep = gsort[np.repeat(start - first, count) + np.arange(total)]
    overlap = np.minimum(pair_iou(dets.sub[det_rep], gt.sub[gt_rep], iou_mode),
                         pair_iou(dets.obj[det_rep], gt.obj[gt_rep], iou_mode))
    has = count > 0
    best = np.full(n_det, -np.inf)
    best[has] = np.maximum.reduceat(overlap, first[has])
    cand = np.flatnonzero(overlap == best[det_rep])
    firsts = np.ones(len(cand), dtype=bool)  # first candidate reaching the max, per detection
    firsts[1:] = det_rep[cand[1:]] != det_rep[cand[:-1]]
    cand = cand[firsts]
    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_gt[det_rep[cand]] = gt_rep[cand]
    order = _class_order(dets) if order is None else order
    hits = order[best[order] >= iou_thr]
    _, first_hit = np.unique(best_gt[hits], return_index=True)
    tp[hits[first_hit]] = True
    return tp


def average_precision(tp_sorted: np.ndarray, npos: int, method: str = '11point') -> float:
    """AP of one class from the TP flags of its detections sorted by decreasing score.

    ``'11point'``: VOC2007 11-point interpolation with exact thresholds k/10 (integer test
    ``10 * tp >= k * npos``), as specified by the official protocol. ``'11point_drift'``:
    QPIC's float thresholds ``np.arange(0., 1.1, 0.1)``. ``'allpoint'``: area under the
    monotone precision envelope (VOC2010+), for comparison. AP is 0 without GT or detections.
    """
    if method not in AP_METHODS:
        raise ValueError(f'AP method must be one of {AP_METHODS}, got {method!r}')
    tp_sorted = np.asarray(tp_sorted, dtype=bool)
    n = len(tp_sorted)
    if npos <= 0 or n == 0:
        return 0.0
    tp_cum = np.cumsum(tp_sorted, dtype=np.int64)
    prec = tp_cum / np.arange(1, n + 1)
    envelope = np.maximum.accumulate(prec[::-1])[::-1]  # max precision from each rank on
    if method == 'allpoint':
        return float(envelope[tp_sorted].sum() / npos)
    # recall is non-decreasing: max precision at recall >= t = envelope at the first such rank
    if method == '11point':
        idx = np.searchsorted(10 * tp_cum, np.arange(11, dtype=np.int64) * npos, side='left')
    else:  # deliberately drifting thresholds, as QPIC's np.arange(0., 1.1, 0.1)
        idx = np.searchsorted(tp_cum / npos, np.arange(0., 1.1, 0.1), side='left')
    p = np.where(idx < n, envelope[np.minimum(idx, n - 1)], 0.0)
    ap = 0.0
    for value in p.tolist():  # summed in order, as MATLAB's and QPIC's loops do
        ap += value / 11.0
    return ap


def topk_per_image(dets: HOIDetections, k: int) -> np.ndarray:
    """Boolean mask keeping the ``k`` highest-scoring rows of each image (stable on ties)."""
    n = len(dets.score)
    if n == 0:
        return np.zeros(0, dtype=bool)
    if np.bincount(dets.img).max() <= k:  # nothing to drop
        return np.ones(n, dtype=bool)
    order = _grouped_score_order(dets.img, dets.score)
    img_sorted = dets.img[order]
    group_start = np.flatnonzero(np.r_[True, img_sorted[1:] != img_sorted[:-1]])
    sizes = np.diff(np.r_[group_start, n])
    rank = np.arange(n) - np.repeat(group_start, sizes)
    keep = np.zeros(n, dtype=bool)
    keep[order[rank < k]] = True
    return keep


def _per_class_ap(cls_sorted: np.ndarray, tp_sorted: np.ndarray, npos: np.ndarray,
                  method: str) -> tuple:
    num_classes = len(npos)
    bounds = np.searchsorted(cls_sorted, np.arange(num_classes + 1), side='left')
    ap = np.zeros(num_classes)
    recall = np.zeros(num_classes)
    for c in range(num_classes):
        seg = tp_sorted[bounds[c]:bounds[c + 1]]
        if len(seg) and npos[c] > 0:
            ap[c] = average_precision(seg, int(npos[c]), method)
            recall[c] = seg.sum() / npos[c]
    return ap, recall


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float('nan')


def invalid_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N,) True where an (N, 4) x1, y1, x2, y2 box is not finite or inverted (x2 < x1 or
    y2 < y1); zero-width boxes are valid."""
    return ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) | \
        (boxes[:, 3] < boxes[:, 1])


def _check_values(what: str, img: np.ndarray, boxes: Dict[str, np.ndarray],
                  score: Optional[np.ndarray], image_names: Optional[Sequence]) -> None:
    """Finite, non-inverted boxes and finite scores, or an error naming image and field."""
    def image(row: int) -> str:
        idx = int(img[row])
        name = image_names[idx] if image_names is not None and idx < len(image_names) else None
        return f'image {idx}' + (f' ({name})' if name is not None else '')

    for field_name, arr in boxes.items():
        bad = invalid_boxes(arr)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = 'is not finite' if not np.isfinite(arr[row]).all() else \
                'is inverted (needs x1 <= x2 and y1 <= y2)'
            raise HICOInputError(f'{what} {field_name} box {arr[row].tolist()} of {image(row)} '
                                 f'{kind}')
    if score is not None and not np.isfinite(score).all():
        row = int(np.flatnonzero(~np.isfinite(score))[0])
        raise HICOInputError(f'{what} score {score[row]} of {image(row)} is not finite')


def evaluate_hoi(gt: HOIGroundTruth, dets: HOIDetections, hoi_object: Sequence[int],
                 rare: Sequence[bool], mode: str = 'official', ap_method: Optional[str] = None,
                 known_object: bool = True, max_per_image: Optional[int] = None,
                 iou_thr: float = 0.5, classes_without_gt: Optional[str] = None,
                 image_names: Optional[Sequence] = None) -> HOIEvalResult:
    """Evaluate detected HOI triplets against GT pairs (see the module docstring).

    Args:
        gt: GT pairs; ``gt.num_images`` images are evaluated.
        dets: detected triplets in the same images / coordinates.
        hoi_object: (C,) object index of each class (for the Known-Object setting).
        rare: (C,) rare flag of each class.
        mode: ``'official'`` (MATLAB protocol) or ``'qpic'`` (QPIC's evaluator).
        ap_method: one of :data:`AP_METHODS`; defaults to ``'11point'`` (official) or
            ``'11point_drift'`` (qpic).
        known_object: also compute the KO setting.
        max_per_image: keep only the top-k triplets per image (default: all for official,
            100 for qpic).
        iou_thr: minimum min(IoU_h, IoU_o) of a TP.
        classes_without_gt: ``'zero'`` (AP 0, counted in the means: official) or ``'ignore'``
            (left out of the means: QPIC); the default follows ``mode``.
        image_names: optional name of each image index, used in error messages.

    Raises:
        HICOInputError: (a ``ValueError``) a non-finite or inverted box, or a non-finite
            score, naming the image and the field (NaN scores would otherwise rank first and
            NaN boxes silently never match).
    """
    if mode not in EVAL_MODES:
        raise ValueError(f'HOI evaluation mode must be one of {EVAL_MODES}, got {mode!r}')
    ap_method = ap_method or ('11point' if mode == 'official' else '11point_drift')
    if ap_method not in AP_METHODS:
        raise ValueError(f'ap_method must be one of {AP_METHODS}, got {ap_method!r}')
    classes_without_gt = classes_without_gt or ('zero' if mode == 'official' else 'ignore')
    if classes_without_gt not in ('zero', 'ignore'):
        raise ValueError("classes_without_gt must be 'zero' or 'ignore', "
                         f'got {classes_without_gt!r}')
    if not 0.0 < iou_thr <= 1.0:
        raise ValueError(f'iou_thr must be in (0, 1], got {iou_thr}')
    hoi_object = _ints(hoi_object, 'hoi_object')
    rare = np.asarray(rare, dtype=bool).reshape(-1)
    num_classes = len(hoi_object)
    if len(rare) != num_classes:
        raise ValueError(f'rare must have {num_classes} entries, got {len(rare)}')
    for name, cls in (('GT', gt.cls), ('detection', dets.cls)):
        if len(cls) and cls.max() >= num_classes:
            raise ValueError(f'{name} classes must be < {num_classes}, got {cls.max()}')
    if len(gt.cls) and gt.cls.min() < 0:
        raise ValueError(f'GT classes must be >= 0, got {gt.cls.min()}')
    if len(dets.img) and (dets.img.min() < 0 or dets.img.max() >= gt.num_images):
        raise ValueError(f'detection image indices must be in [0, {gt.num_images}), got '
                         f'[{dets.img.min()}, {dets.img.max()}]')
    _check_values('GT', gt.img, dict(subject=gt.sub, object=gt.obj), None, image_names)
    _check_values('detected', dets.img, dict(subject=dets.sub, object=dets.obj), dets.score,
                  image_names)

    if max_per_image is None and mode == 'qpic':
        max_per_image = QPIC_MAX_PER_IMAGE
    if mode == 'qpic':  # corre-masked triplets keep competing for the top-k with score 0
        dets = HOIDetections(dets.img, dets.cls, dets.sub, dets.obj,
                             np.where(dets.cls >= 0, dets.score, 0.0))
    keep = dets.cls >= 0
    if max_per_image is not None:
        keep &= topk_per_image(dets, int(max_per_image))
    if not keep.all():
        dets = dets.select(keep)

    iou_mode = 'official' if mode == 'official' else 'qpic'
    order = _class_order(dets)
    tp = match_detections(dets, gt, iou_thr=iou_thr, iou_mode=iou_mode, order=order)
    cls_sorted, tp_sorted = dets.cls[order], tp[order]
    npos = np.bincount(gt.cls, minlength=num_classes)
    ap, recall = _per_class_ap(cls_sorted, tp_sorted, npos, ap_method)

    ap_ko = None
    if known_object:
        n_obj = int(hoi_object.max()) + 1 if num_classes else 0
        has_obj = np.zeros((gt.num_images, n_obj), dtype=bool)
        has_obj[gt.img, hoi_object[gt.cls]] = True
        keep = has_obj[dets.img[order], hoi_object[cls_sorted]]
        ap_ko, _ = _per_class_ap(cls_sorted[keep], tp_sorted[keep], npos, ap_method)

    counted = np.ones(num_classes, dtype=bool) if classes_without_gt == 'zero' else npos > 0
    summary = {
        'mAP': _mean(ap, counted),
        'mAP_rare': _mean(ap, counted & rare),
        'mAP_non_rare': _mean(ap, counted & ~rare),
        'mRec': _mean(recall, counted),
    }
    if ap_ko is not None:
        summary.update({
            'mAP_ko': _mean(ap_ko, counted),
            'mAP_ko_rare': _mean(ap_ko, counted & rare),
            'mAP_ko_non_rare': _mean(ap_ko, counted & ~rare),
        })
    return HOIEvalResult(ap=ap, ap_ko=ap_ko, recall=recall, npos=npos, summary=summary)
