"""HICO-DET in the JSON layout of the transformer HOI detectors (QPIC, CDN, GEN-VLKT, ...).

On disk::

    data/hico_20160224_det/
      annotations/trainval_hico.json   # list, one entry per image
      annotations/test_hico.json
      annotations/corre_hico.npy       # (117, 80) verb-object validity (optional here)
      images/train2015/*.jpg
      images/test2015/*.jpg

An entry: ``file_name``; ``annotations`` = boxes ``{"bbox": [x1, y1, x2, y2], "category_id":
<COCO 91-space id, 1 = person>}``; ``hoi_annotation`` = ``{"subject_id", "object_id"
(indices into annotations), "category_id": <verb id 1..117>, "hoi_category_id": <1..600,
train>}``. Prediction files (``tools/analysis_tools/eval_hoi.py``) use the same layout with a
``score`` on every ``hoi_prediction`` entry and boxes under ``predictions`` (or
``annotations``).
"""
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmengine.fileio import exists, get_local_path
from mmengine.logging import print_log

from mmvitreg.registry import DATASETS
from .hico_json import HICOInputError, read_json_list
from .hico_meta import HOIClassTable, hico_meta

__all__ = ['HICODetDataset', 'load_hico_json', 'parse_hico_entry', 'HOIIndexError',
           'HICOInputError']


class HOIIndexError(HICOInputError):
    """An HOI whose subject/object index does not point into the image's boxes."""


def load_hico_json(path: str, backend_args: Optional[dict] = None,
                   what: str = 'HICO-DET annotation file') -> list:
    """Read a HICO-DET style JSON list, with one-sentence errors for missing/malformed files."""
    if not exists(path, backend_args=backend_args):
        raise FileNotFoundError(f'{what} not found: {path}')
    with get_local_path(path, backend_args=backend_args) as local:
        return read_json_list(local, what, path)


def _num(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HICOInputError(f'{where} must be a number, got {value!r}')
    try:
        value = float(value)
    except OverflowError:  # a JSON integer beyond the float range
        raise HICOInputError(f'{where} must be a finite number, got an integer of '
                             f'{len(str(abs(value)))} digits') from None
    if not np.isfinite(value):
        raise HICOInputError(f'{where} must be a finite number, got {value!r}')
    return value


def parse_hico_entry(entry, index: int, path: str, prediction: bool = False,
                     table: Optional[HOIClassTable] = None,
                     check_box_order: bool = False) -> Dict:
    """Validate one image entry and convert it to arrays.

    Returns a dict with ``file_name``; ``bboxes`` (N, 4) float64; ``labels`` (N,) contiguous
    labels of ``table`` (HICO-DET's by default: COCO order 0..79); ``hois`` (M, 3) int64 rows
    ``(subject index, object index, verb 0..V-1)``; ``hoi_ids`` (M,) 0-based HOI class from
    ``hoi_category_id`` (-1 when absent); and for predictions ``scores`` (M,) float64.

    Box coordinates and scores must be finite numbers; with ``check_box_order`` (evaluation
    input) a box must also have ``x1 <= x2`` and ``y1 <= y2`` (training annotations may hold
    inverted boxes: ``CleanHOIAnnotations`` drops them, as QPIC does).

    Raises:
        HICOInputError: (a ``ValueError``) naming ``path``, the entry and the offending item;
            :class:`HOIIndexError` for subject/object indices out of range.
    """
    table = table or hico_meta()
    if not isinstance(entry, dict):
        raise HICOInputError(f'{path} entry {index} must be a JSON object, got '
                         f'{type(entry).__name__}')
    file_name = entry.get('file_name')
    if not isinstance(file_name, str) or not file_name:
        raise HICOInputError(f'{path} entry {index} has no "file_name" string')
    where = f'{path} entry {index} ({file_name})'
    box_key = 'annotations'
    if prediction and 'predictions' in entry:
        box_key = 'predictions'
    boxes = entry.get(box_key, [])
    hoi_key = 'hoi_prediction' if prediction else 'hoi_annotation'
    hois = entry.get(hoi_key, [])
    if not isinstance(boxes, list):
        raise HICOInputError(f'{where}: "{box_key}" must be a list')
    if not isinstance(hois, list):
        raise HICOInputError(f'{where}: "{hoi_key}" must be a list')

    bboxes = np.zeros((len(boxes), 4), dtype=np.float64)
    labels = np.zeros(len(boxes), dtype=np.int64)
    for j, box in enumerate(boxes):
        if not isinstance(box, dict) or 'bbox' not in box or 'category_id' not in box:
            raise HICOInputError(f'{where}: {box_key}[{j}] needs "bbox" and "category_id"')
        bbox = box['bbox']
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise HICOInputError(f'{where}: {box_key}[{j}] bbox must be [x1, y1, x2, y2], '
                             f'got {bbox!r}')
        bboxes[j] = [_num(v, f'{where}: {box_key}[{j}] bbox') for v in bbox]
        if check_box_order and (bboxes[j, 2] < bboxes[j, 0] or bboxes[j, 3] < bboxes[j, 1]):
            raise HICOInputError(f'{where}: {box_key}[{j}] bbox {bbox!r} is inverted (needs '
                                 'x1 <= x2 and y1 <= y2)')
        cid = box['category_id']
        label = table.category_to_label(cid)[()] if isinstance(cid, int) and \
            not isinstance(cid, bool) and 0 <= cid <= int(table.category_ids.max()) else -1
        if label < 0:
            raise HICOInputError(f'{where}: {box_key}[{j}] has unknown object category_id '
                             f'{cid!r} (expected one of the {table.num_objects} ids '
                             f'{_id_range(table.category_ids)})')
        labels[j] = label

    rows = np.zeros((len(hois), 3), dtype=np.int64)
    hoi_ids = np.full(len(hois), -1, dtype=np.int64)
    scores = np.zeros(len(hois), dtype=np.float64)
    n_box = len(boxes)
    for k, hoi in enumerate(hois):
        if not isinstance(hoi, dict):
            raise HICOInputError(f'{where}: {hoi_key}[{k}] must be a JSON object')
        for key in ('subject_id', 'object_id', 'category_id'):
            if key not in hoi:
                raise HICOInputError(f'{where}: {hoi_key}[{k}] has no "{key}"')
        for key in ('subject_id', 'object_id'):
            value = hoi[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_box:
                raise HOIIndexError(f'{where}: {hoi_key}[{k}] has {key} {value!r} out of '
                                    f'range for {n_box} boxes')
        verb = hoi['category_id']
        if isinstance(verb, bool) or not isinstance(verb, int) or \
                not 1 <= verb <= table.num_verbs:
            raise HICOInputError(f'{where}: {hoi_key}[{k}] has verb category_id {verb!r} outside '
                             f'1..{table.num_verbs}')
        rows[k] = (hoi['subject_id'], hoi['object_id'], verb - 1)
        if 'hoi_category_id' in hoi:
            hid = hoi['hoi_category_id']
            if isinstance(hid, bool) or not isinstance(hid, int) or \
                    not 1 <= hid <= table.num_hoi_classes:
                raise HICOInputError(f'{where}: {hoi_key}[{k}] has hoi_category_id {hid!r} '
                                 f'outside 1..{table.num_hoi_classes}')
            hoi_ids[k] = hid - 1
        if prediction:
            if 'score' not in hoi:
                raise HICOInputError(f'{where}: {hoi_key}[{k}] has no "score"')
            scores[k] = _num(hoi['score'], f'{where}: {hoi_key}[{k}] score')
    out = dict(file_name=file_name, bboxes=bboxes, labels=labels, hois=rows, hoi_ids=hoi_ids)
    if prediction:
        out['scores'] = scores
    return out


def _id_range(ids: np.ndarray) -> str:
    lo, hi = int(ids.min()), int(ids.max())
    return f'in {lo}..{hi}' if hi - lo + 1 > len(ids) else f'{lo}..{hi}'


def merge_pairs(hois: np.ndarray) -> List[dict]:
    """Merge HOI rows ``(subject, object, verb)`` on the same pair into multi-verb pairs.

    Pairs keep the order of their first occurrence (as QPIC's training targets do).
    """
    pairs: Dict[tuple, List[int]] = {}
    for sub, obj, verb in hois.tolist():
        verbs = pairs.setdefault((sub, obj), [])
        if verb not in verbs:
            verbs.append(verb)
    return [dict(subject_id=s, object_id=o, verb_labels=v) for (s, o), v in pairs.items()]


@DATASETS.register_module()
class HICODetDataset(BaseDetDataset):
    """HICO-DET (JSON release of the transformer HOI detectors) as an mmdet dataset.

    Each data info has ``instances`` (boxes with contiguous labels of the class table, COCO
    order for HICO-DET: person = 0) and ``hois``: in training the HOIs of one (subject, object)
    pair are merged into one entry with several verbs (the multi-hot target of QPIC); in test
    mode every annotated HOI stays one entry (duplicates included) and the raw GT is also kept
    as ``hoi_gt`` for :class:`~mmvitreg.evaluation.HICODetMetric`.

    The HOI class table (box classes, verbs, HOI classes, rare split) is HICO-DET's unless
    ``class_table`` names another one, or ``metainfo`` describes one (the keys of
    :meth:`~mmvitreg.datasets.hico_meta.HOIClassTable.to_metainfo`); the metainfo then carries
    it to the metric, the visualizer and the inference API, so the same pipeline serves any HOI
    data set in this layout.

    Args:
        ann_file: e.g. ``'annotations/trainval_hico.json'`` (relative to ``data_root``).
        data_prefix: ``dict(img='images/train2015/')``.
        class_table: optional ``.json`` (metainfo keys) or ``.csv`` (layout of the package's
            HICO-DET table) file, relative to ``data_root`` unless absolute.
        invalid_hoi: ``'error'`` (default) raises on an HOI whose subject/object index is out
            of range; ``'skip_image'`` drops such images, as QPIC's training set does (the
            public ``trainval_hico.json`` has a few).
        merge_pairs: merge HOIs per pair (default: ``not test_mode``).
        filter_cfg: ``dict(filter_empty_gt=True)`` drops training images without pairs. The
            default (and the shipped configs, ``filter_empty_gt=False``) keep them, as QPIC's
            training set (``datasets/hico.py``) does: such an image trains every query as
            "no interaction" (an empty target, like an image whose pairs a crop removed).
    """

    METAINFO = hico_meta().to_metainfo()

    def __init__(self, *args, class_table: Optional[str] = None, invalid_hoi: str = 'error',
                 merge_pairs: Optional[bool] = None, **kwargs):
        if invalid_hoi not in ('error', 'skip_image'):
            raise ValueError(f"HICODetDataset invalid_hoi must be 'error' or 'skip_image', "
                             f'got {invalid_hoi!r}')
        self.invalid_hoi = invalid_hoi
        self._merge_pairs = merge_pairs
        self._class_table = class_table
        super().__init__(*args, **kwargs)

    @property
    def hoi_table(self) -> HOIClassTable:
        """The HOI class table of this data set (from its metainfo)."""
        return HOIClassTable.from_metainfo(self._metainfo, f'{type(self).__name__} metainfo')

    def _read_class_table(self) -> None:
        path = self._class_table
        if not osp.isabs(path):
            path = osp.join(self.data_root or '', path)
        self._metainfo.update(HOIClassTable.from_file(path).to_metainfo())

    def load_data_list(self) -> List[dict]:
        if self._class_table:
            self._read_class_table()
        table = self.hoi_table
        merge = (not self.test_mode) if self._merge_pairs is None else self._merge_pairs
        entries = load_hico_json(self.ann_file, self.backend_args)
        img_root = self.data_prefix.get('img', '') or ''
        data_list, skipped = [], 0
        for idx, entry in enumerate(entries):
            try:
                parsed = parse_hico_entry(entry, idx, self.ann_file, table=table,
                                          check_box_order=self.test_mode)
            except HOIIndexError:
                if self.invalid_hoi == 'error':
                    raise
                skipped += 1
                continue
            instances = [
                dict(bbox=box.tolist(), bbox_label=int(label), ignore_flag=0)
                for box, label in zip(parsed['bboxes'], parsed['labels'])
            ]
            if merge:
                hois = merge_pairs(parsed['hois'])
            else:
                hois = [dict(subject_id=int(s), object_id=int(o), verb_labels=[int(v)])
                        for s, o, v in parsed['hois']]
            info = dict(
                img_path=osp.join(img_root, parsed['file_name']),
                img_id=idx,
                file_name=parsed['file_name'],
                instances=instances,
                hois=hois,
                hoi_num_verbs=table.num_verbs,
            )
            if self.test_mode:
                info['hoi_gt'] = dict(bboxes=parsed['bboxes'], labels=parsed['labels'],
                                      hois=parsed['hois'])
            data_list.append(info)
        if skipped:
            print_log(f'HICODetDataset: skipped {skipped} images of {self.ann_file} with '
                      'out-of-range subject/object indices', logger='current')
        return data_list

    def filter_data(self) -> List[dict]:
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        if self.filter_cfg.get('filter_empty_gt', False):
            return [info for info in self.data_list if info['hois']]
        return self.data_list

    def get_cat_ids(self, idx: int) -> List[int]:
        return [inst['bbox_label'] for inst in self.get_data_info(idx)['instances']]
