"""Pair-aware transforms for HOI detection (HICO-DET), built on the mmdet transforms.

Pairs are stored as *indices into the GT boxes* (``gt_hoi_sub_ids``, ``gt_hoi_obj_ids``) next
to their multi-hot verbs (``gt_hoi_verbs``, (P, 117) float32). Transforms that only move boxes
(mmdet ``Resize``/``RandomChoiceResize``/``RandomFlip``, padding, colour jitter) therefore keep
pairs consistent as they are and are reused unchanged; transforms that *drop* boxes must remap
the pairs, which :class:`HOIRandomCrop` (DETR's ``RandomSizeCrop`` as used by QPIC) does: a
pair whose subject or object box is cropped away is dropped as a pair.
:class:`CleanHOIAnnotations` is QPIC's training-annotation cleaning (clamp, drop degenerate
boxes with their pairs, cap the pairs at the number of queries). Image normalisation is
done by mmdet's ``DetDataPreprocessor`` in the model, as everywhere in mmdet 3.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform, to_tensor
from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs, RandomCrop
from mmdet.structures.bbox import BaseBoxes
from mmengine.structures import InstanceData

from mmvitreg.registry import TRANSFORMS
from ..hico_meta import NUM_VERBS

__all__ = ['LoadHOIAnnotations', 'CleanHOIAnnotations', 'HOIRandomCrop', 'PackHOIInputs',
           'remap_hoi_pairs']

HOI_KEYS = ('gt_hoi_sub_ids', 'gt_hoi_obj_ids', 'gt_hoi_verbs')


def remap_hoi_pairs(results: dict, kept: np.ndarray, num_boxes: int) -> dict:
    """Re-index the pairs of ``results`` after boxes were filtered.

    Args:
        results: transform results with the :data:`HOI_KEYS`.
        kept: old indices of the surviving boxes, in their new order.
        num_boxes: number of boxes before filtering.

    Pairs whose subject or object did not survive are dropped; the others point to the new
    positions of their boxes.
    """
    if 'gt_hoi_sub_ids' not in results:
        return results
    kept = np.asarray(kept, dtype=np.int64)
    new_index = np.full(num_boxes, -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    sub = new_index[results['gt_hoi_sub_ids']]
    obj = new_index[results['gt_hoi_obj_ids']]
    keep = (sub >= 0) & (obj >= 0)
    results['gt_hoi_sub_ids'] = sub[keep]
    results['gt_hoi_obj_ids'] = obj[keep]
    results['gt_hoi_verbs'] = results['gt_hoi_verbs'][keep]
    return results


@TRANSFORMS.register_module()
class LoadHOIAnnotations(LoadAnnotations):
    """mmdet ``LoadAnnotations`` (boxes, labels) plus the HOI pairs of ``results['hois']``.

    Added keys: ``gt_hoi_sub_ids`` (P,) int64, ``gt_hoi_obj_ids`` (P,) int64 and
    ``gt_hoi_verbs`` (P, num_verbs) float32 multi-hot. ``num_verbs`` defaults to the data set's
    class table (``hoi_num_verbs`` of each data info: 117 for HICO-DET).
    """

    def __init__(self, with_hoi: bool = True, num_verbs: Optional[int] = None, **kwargs):
        kwargs.setdefault('with_bbox', True)
        kwargs.setdefault('with_label', True)
        super().__init__(**kwargs)
        self.with_hoi = with_hoi
        self.num_verbs = num_verbs

    def _load_hois(self, results: dict) -> None:
        hois = results.get('hois', [])
        n_box = len(results.get('instances', []))
        sub = np.array([h['subject_id'] for h in hois], dtype=np.int64)
        obj = np.array([h['object_id'] for h in hois], dtype=np.int64)
        if len(hois) and (sub.max() >= n_box or obj.max() >= n_box or
                          min(sub.min(), obj.min()) < 0):
            raise ValueError(f'HOI pairs of {results.get("img_path")} index boxes out of '
                             f'range 0..{n_box - 1}')
        num_verbs = self.num_verbs or results.get('hoi_num_verbs', NUM_VERBS)
        verbs = np.zeros((len(hois), num_verbs), dtype=np.float32)
        for i, h in enumerate(hois):
            v = np.asarray(h['verb_labels'], dtype=np.int64)
            if len(v) and (v.min() < 0 or v.max() >= num_verbs):
                raise ValueError(f'HOI verbs of {results.get("img_path")} must be in '
                                 f'0..{num_verbs - 1}, got {v.tolist()}')
            verbs[i, v] = 1.0
        results['hoi_num_verbs'] = num_verbs
        results['gt_hoi_sub_ids'] = sub
        results['gt_hoi_obj_ids'] = obj
        results['gt_hoi_verbs'] = verbs

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        if self.with_hoi:
            self._load_hois(results)
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', with_hoi={self.with_hoi})'


def _filter_boxes(results: dict, kept: np.ndarray) -> None:
    """Keep the boxes ``kept`` (old indices, new order) and remap the pairs onto them."""
    num_boxes = len(results['gt_bboxes'])
    for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks'):
        if results.get(key, None) is not None:
            results[key] = results[key][kept]
    remap_hoi_pairs(results, kept, num_boxes)


@TRANSFORMS.register_module()
class CleanHOIAnnotations(BaseTransform):
    """QPIC's cleaning of the *training* annotations, pair-aware.

    The official dataset (hitachi-rd-cv/qpic ``datasets/hico.py``, ``HICODetection.__getitem__``
    in the ``train`` branch) before any augmentation

    1. truncates the box list of an image to ``num_queries`` boxes,
    2. clamps the boxes to the image,
    3. drops boxes with zero width/height or inverted corners (``x2 <= x1`` or ``y2 <= y1``),
       and with them every HOI whose subject or object was dropped.

    Step 1 is the official truncation bug (qpic issue #37): it is the *pairs* -- one per query --
    that should not exceed the number of queries, not the boxes. Here the cap applies to the
    pairs (``max_pairs``, set it to the model's ``num_queries``; the first pairs in annotation
    order are kept, boxes stay); ``max_boxes`` reproduces the official box truncation for
    exact reruns (pairs using a truncated box are dropped, as officially). Pair indices always
    point to the right boxes after filtering (:func:`remap_hoi_pairs`).

    Place it right after ``LoadHOIAnnotations`` in the training pipeline (boxes in original
    image coordinates, ``img_shape`` = image size). Without it an inverted box pins its GIoU
    loss at 2 and out-of-image boxes give unreachable L1 targets.

    Args:
        clamp: clamp boxes to ``[0, w] x [0, h]`` of ``results['img_shape']`` (official).
        drop_degenerate: drop boxes with ``x2 <= x1`` or ``y2 <= y1`` after clamping, with
            their pairs (official).
        max_pairs: keep at most this many (subject, object) pairs; ``None`` = no cap.
        max_boxes: keep only the first ``max_boxes`` boxes before cleaning, dropping the pairs
            that use the others (the official behaviour with ``num_queries``); ``None`` (the
            default) = no box cap.
    """

    def __init__(self, clamp: bool = True, drop_degenerate: bool = True,
                 max_pairs: Optional[int] = 100, max_boxes: Optional[int] = None) -> None:
        for name, value in (('max_pairs', max_pairs), ('max_boxes', max_boxes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f'CleanHOIAnnotations {name} must be None or a positive '
                                 f'integer, got {value!r}')
        self.clamp = clamp
        self.drop_degenerate = drop_degenerate
        self.max_pairs = max_pairs
        self.max_boxes = max_boxes

    def transform(self, results: dict) -> dict:
        boxes = results.get('gt_bboxes', None)
        if boxes is None:
            return results
        if self.max_boxes is not None and len(boxes) > self.max_boxes:
            _filter_boxes(results, np.arange(self.max_boxes))
        if self.clamp:
            if 'img_shape' not in results:
                raise KeyError('CleanHOIAnnotations(clamp=True) needs `img_shape` in the '
                               'results: load the image first (LoadImageFromFile)')
            h, w = results['img_shape'][:2]
            boxes = results['gt_bboxes']
            if isinstance(boxes, BaseBoxes):
                boxes.clip_((h, w))
            else:
                boxes = np.asarray(boxes, dtype=np.float32).copy()
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
                results['gt_bboxes'] = boxes
        if self.drop_degenerate:
            boxes = results['gt_bboxes']
            xyxy = boxes.tensor.numpy() if isinstance(boxes, BaseBoxes) else np.asarray(boxes)
            valid = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            if not valid.all():
                _filter_boxes(results, np.flatnonzero(valid))
        if self.max_pairs is not None and 'gt_hoi_sub_ids' in results and \
                len(results['gt_hoi_sub_ids']) > self.max_pairs:
            for key in HOI_KEYS:
                results[key] = results[key][:self.max_pairs]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(clamp={self.clamp}, drop_degenerate='
                f'{self.drop_degenerate}, max_pairs={self.max_pairs}, '
                f'max_boxes={self.max_boxes})')


@TRANSFORMS.register_module()
class HOIRandomCrop(RandomCrop):
    """mmdet ``RandomCrop`` that keeps the HOI pairs consistent with the surviving boxes.

    With ``crop_type='absolute_range', crop_size=(384, 600)`` and ``allow_negative_crop=True``
    (the defaults here) it is DETR's ``RandomSizeCrop(384, 600)`` used by QPIC: crop height and
    width drawn uniformly in ``[min(side, 384), min(side, 600)]``, a uniform offset, boxes
    translated and clipped, boxes left with no area removed. Pairs losing their subject or
    object box are dropped.
    """

    def __init__(self, crop_size: Tuple[int, int] = (384, 600),
                 crop_type: str = 'absolute_range', allow_negative_crop: bool = True,
                 **kwargs):
        super().__init__(crop_size=crop_size, crop_type=crop_type,
                         allow_negative_crop=allow_negative_crop, **kwargs)

    def _crop_data(self, results: dict, crop_size: Tuple[int, int],
                   allow_negative_crop: bool) -> Union[dict, None]:
        bboxes = results.get('gt_bboxes', None)
        if bboxes is None:
            return super()._crop_data(results, crop_size, allow_negative_crop)
        num_boxes = len(bboxes)
        labels = results.get('gt_bboxes_labels', None)
        # Track the survivors: mmdet filters gt_bboxes_labels with the same mask as the boxes.
        results['gt_bboxes_labels'] = np.arange(num_boxes, dtype=np.int64)
        out = super()._crop_data(results, crop_size, allow_negative_crop)
        if out is None:
            results['gt_bboxes_labels'] = labels
            return None
        kept = out['gt_bboxes_labels']
        if labels is None:
            out.pop('gt_bboxes_labels')
        else:
            out['gt_bboxes_labels'] = labels[kept]
        return remap_hoi_pairs(out, kept, num_boxes)


@TRANSFORMS.register_module()
class PackHOIInputs(PackDetInputs):
    """mmdet ``PackDetInputs`` plus ``data_sample.gt_hoi`` (see docs/DESIGN.md).

    ``gt_hoi`` is an ``InstanceData`` with ``sub_ids``/``obj_ids`` (P,) int64 indices into
    ``gt_instances`` and ``verb_labels`` (P, 117) float32. Boxes flagged ``ignore`` go to
    ``ignored_instances`` as in mmdet; pairs referring to them are dropped. The default meta
    keys add ``file_name`` and ``hoi_gt`` (raw original-coordinate GT of test images, used by
    :class:`HICODetMetric`).
    """

    def __init__(self, meta_keys: Sequence[str] = (
            'img_id', 'img_path', 'file_name', 'ori_shape', 'img_shape', 'scale_factor',
            'flip', 'flip_direction', 'hoi_gt')):
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        if 'gt_hoi_sub_ids' not in results:
            return packed
        sub = np.asarray(results['gt_hoi_sub_ids'], dtype=np.int64)
        obj = np.asarray(results['gt_hoi_obj_ids'], dtype=np.int64)
        verbs = np.asarray(results['gt_hoi_verbs'], dtype=np.float32)
        if verbs.ndim != 2:
            verbs = verbs.reshape(len(sub), results.get('hoi_num_verbs', NUM_VERBS))
        flags = results.get('gt_ignore_flags', None)
        if flags is not None and np.any(flags):
            tmp = dict(gt_hoi_sub_ids=sub, gt_hoi_obj_ids=obj, gt_hoi_verbs=verbs)
            remap_hoi_pairs(tmp, np.flatnonzero(np.asarray(flags) == 0), len(flags))
            sub, obj, verbs = (tmp[k] for k in HOI_KEYS)
        gt_hoi = InstanceData()
        gt_hoi.sub_ids = to_tensor(sub).long()
        gt_hoi.obj_ids = to_tensor(obj).long()
        gt_hoi.verb_labels = to_tensor(verbs).float()
        packed['data_samples'].gt_hoi = gt_hoi
        return packed
