"""HICO-DET files <-> flat evaluation arrays, and the text/CSV reports of an evaluation.

Pure ``json`` + ``numpy`` (no OpenMMLab import), so that the offline evaluator
(``tools/analysis_tools/eval_hoi.py``) costs little more than reading its input.

:func:`read_hico_file` reads an annotation or prediction file (the JSON release layout of
QPIC/CDN, see :mod:`mmvitreg.datasets.hico_det`) into flat arrays with one pass of list
comprehensions per field and bulk ``numpy`` checks, instead of validating each box and HOI in
Python (type checks are one ``set(map(type, ...))`` per field). It accepts exactly the files
:func:`mmvitreg.datasets.hico_det.parse_hico_entry` accepts and gives the same arrays; when a
bulk check fails, the entries are re-read one by one with ``parse_hico_entry`` so that the error
names the file, the entry and the offending item.
"""
import csv
import gc
import os
import os.path as osp
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mmvitreg.datasets.hico_json import read_json_list
from mmvitreg.datasets.hico_meta import HOIClassTable, hico_meta
from mmvitreg.evaluation.functional.hoi_eval import (HOIDetections, HOIEvalResult, HOIGroundTruth,
                                                     invalid_boxes)

__all__ = ['HICOFile', 'read_hico_file', 'gt_from_file', 'dets_from_file', 'gt_from_images',
           'dets_from_triplets', 'format_summary', 'write_per_class_ap']

PRED_HOI_KEY = 'hoi_prediction'
GT_HOI_KEY = 'hoi_annotation'


@dataclass
class HICOFile:
    """One HICO-DET JSON file as flat arrays (file order).

    Attributes:
        path: the file read.
        file_names: one per entry.
        boxes: (B, 4) float64 x1, y1, x2, y2 of all entries, concatenated.
        labels: (B,) contiguous COCO labels 0..79.
        n_boxes: (I,) boxes per entry.
        hois: (H, 3) int64 rows (subject, object, verb 0..116); subject/object index ``boxes``
            (already offset by the entry's first box).
        n_hois: (I,) HOIs per entry.
        scores: (H,) float64 for prediction files, else None.
        table: the HOI class table the file was read with (labels, verbs and classes refer to
            it; HICO-DET's by default).
    """
    path: str
    file_names: List[str]
    boxes: np.ndarray
    labels: np.ndarray
    n_boxes: np.ndarray
    hois: np.ndarray
    n_hois: np.ndarray
    scores: Optional[np.ndarray] = None
    table: HOIClassTable = field(default_factory=hico_meta, repr=False)


class _Reject(Exception):
    """A bulk check failed: find and report the exact problem entry by entry."""


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of containers are created.

    ``json.load`` of a prediction file makes millions of dicts and lists, none of them cyclic;
    every 700 allocations the collector would rescan the young ones for nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_INT = {int}
_NUMBER = {int, float}
_LIST = {list}


def _ints(values: list) -> np.ndarray:
    """(N,) int64 of a list of JSON integers (``true``/``false`` are not integers here)."""
    if not set(map(type, values)) <= _INT:
        raise _Reject
    try:
        arr = np.array(values, dtype=np.int64)
    except OverflowError:
        raise _Reject from None
    return arr.reshape(len(values))


def _numbers(values: list, shape: Tuple[int, ...]) -> np.ndarray:
    """float64 array of ``shape`` from a list of JSON numbers (or of lists of them)."""
    if len(shape) == 2:
        try:
            types = set(map(type, chain.from_iterable(values)))
        except TypeError:  # an item is not a list
            raise _Reject from None
        if not set(map(type, values)) <= _LIST:
            raise _Reject
    else:
        types = set(map(type, values))
    if not types <= _NUMBER:
        raise _Reject
    try:
        arr = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged lists
        raise _Reject from None
    if arr.shape != shape:
        if arr.size == 0 and np.prod(shape) == 0:
            return np.zeros(shape, dtype=np.float64)
        raise _Reject
    return arr


def _wrong_key_message(path: str, index: int, name: str, entry: dict, prediction: bool) -> str:
    where = f'{path} entry {index} ({name})'
    if prediction:
        found = (f' (it has "{GT_HOI_KEY}": predicted HOIs go under "{PRED_HOI_KEY}", each '
                 'with a "score")') if GT_HOI_KEY in entry else ''
        return f'{where} has no "{PRED_HOI_KEY}" list{found}'
    return (f'{where} has "{PRED_HOI_KEY}" but no "{GT_HOI_KEY}": this is a prediction file, '
            'pass it as the predictions and the test annotations as the annotation file')


def _flatten(entries: list, path: str, prediction: bool, table: HOIClassTable) -> HICOFile:
    n_entries = len(entries)
    names: List[str] = [''] * n_entries
    box_lists: list = [None] * n_entries
    hoi_lists: list = [None] * n_entries
    hoi_key = PRED_HOI_KEY if prediction else GT_HOI_KEY
    for i, entry in enumerate(entries):
        if type(entry) is not dict:
            raise _Reject
        name = entry.get('file_name')
        if type(name) is not str or not name:
            raise _Reject
        names[i] = name
        if hoi_key in entry:
            hois = entry[hoi_key]
        elif prediction or PRED_HOI_KEY in entry:
            raise ValueError(_wrong_key_message(path, i, name, entry, prediction))
        else:
            hois = []
        if prediction and 'predictions' in entry:
            boxes = entry['predictions']
        else:
            boxes = entry.get('annotations', [])
        if type(boxes) is not list or type(hois) is not list:
            raise _Reject
        box_lists[i] = boxes
        hoi_lists[i] = hois
    n_boxes = np.fromiter(map(len, box_lists), dtype=np.int64, count=n_entries)
    n_hois = np.fromiter(map(len, hoi_lists), dtype=np.int64, count=n_entries)
    boxes = list(chain.from_iterable(box_lists))
    hois = list(chain.from_iterable(hoi_lists))
    del box_lists, hoi_lists
    try:
        bbox = [b['bbox'] for b in boxes]
        cat = [b['category_id'] for b in boxes]
        sub = [h['subject_id'] for h in hois]
        obj = [h['object_id'] for h in hois]
        verb = [h['category_id'] for h in hois]
        hoi_cls = [h.get('hoi_category_id', 1) for h in hois]
        score = [h['score'] for h in hois] if prediction else None
    except (KeyError, TypeError, AttributeError):  # not dicts, or a key missing
        raise _Reject from None
    bbox = _numbers(bbox, (len(boxes), 4))
    if invalid_boxes(bbox).any():  # non-finite or inverted boxes
        raise _Reject
    labels = table.category_to_label(_ints(cat))
    verb, sub, obj, hoi_cls = _ints(verb), _ints(sub), _ints(obj), _ints(hoi_cls)
    box_count = np.repeat(n_boxes, n_hois)
    if (labels < 0).any() or (sub < 0).any() or (sub >= box_count).any() or \
            (obj < 0).any() or (obj >= box_count).any() or (verb < 1).any() or \
            (verb > table.num_verbs).any() or (hoi_cls < 1).any() or \
            (hoi_cls > table.num_hoi_classes).any():
        raise _Reject
    offset = np.repeat(np.cumsum(n_boxes) - n_boxes, n_hois)
    rows = np.stack([sub + offset, obj + offset, verb - 1], axis=1) if len(hois) else \
        np.zeros((0, 3), dtype=np.int64)
    scores = _numbers(score, (len(hois),)) if prediction else None
    if prediction and not np.isfinite(scores).all():
        raise _Reject
    return HICOFile(path=path, file_names=names, boxes=bbox, labels=labels, n_boxes=n_boxes,
                    hois=rows.astype(np.int64, copy=False), n_hois=n_hois, scores=scores,
                    table=table)


def _explain(entries: list, path: str, prediction: bool, table: HOIClassTable) -> None:
    """Re-read entry by entry to raise the precise error of the first bad one."""
    from mmvitreg.datasets.hico_det import parse_hico_entry  # heavy; only on bad input
    for index, entry in enumerate(entries):
        parse_hico_entry(entry, index, path, prediction=prediction, table=table,
                         check_box_order=True)


def read_hico_file(path: str, prediction: bool = False, what: Optional[str] = None,
                   table: Optional[HOIClassTable] = None) -> HICOFile:
    """Read a HICO-DET annotation (or, with ``prediction=True``, prediction) JSON file.

    Prediction entries must have a ``hoi_prediction`` list (an entry with ``hoi_annotation``
    instead is an error naming the expected key); their boxes are read from ``predictions``,
    or from ``annotations`` when there is no ``predictions`` key.

    Box coordinates and scores must be finite, boxes not inverted (``x1 <= x2``,
    ``y1 <= y2``), object and verb ids those of the class table.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a JSON list; :class:`~mmvitreg.datasets.hico_json.HICOInputError` (a
            ``ValueError``) for an entry that ``parse_hico_entry`` rejects (same message,
            naming the file, the entry and the item).
    """
    what = what or ('prediction file' if prediction else 'HICO-DET annotation file')
    table = table or hico_meta()
    with _no_gc():
        entries = read_json_list(path, what)
        try:
            return _flatten(entries, path, prediction, table)
        except _Reject:
            pass
    _explain(entries, path, prediction, table)
    raise ValueError(f'{what} {path} has an entry with a value of the wrong type (e.g. a '
                     'string, null or true where a number is expected)')


def _index_names(ann: HICOFile) -> Dict[str, int]:
    names: Dict[str, int] = {}
    for idx, name in enumerate(ann.file_names):
        if name in names:
            raise ValueError(f'{ann.path} entry {idx} repeats image {name!r}')
        names[name] = idx
    return names


def gt_from_file(ann: HICOFile) -> Tuple[HOIGroundTruth, int, Dict[str, int]]:
    """Flat GT pairs of an annotation file, the number of HOIs that are none of the table's
    classes (left out), and the image index of every file name (repeated names are an
    error). Same arrays as :func:`gt_from_images` on the parsed entries."""
    names = _index_names(ann)
    cls = ann.table.hoi_class(ann.hois[:, 2], ann.labels[ann.hois[:, 1]])
    ok = cls >= 0
    img = np.repeat(np.arange(len(ann.file_names)), ann.n_hois)
    gt = HOIGroundTruth(img=img[ok], cls=cls[ok], sub=ann.boxes[ann.hois[ok, 0]],
                        obj=ann.boxes[ann.hois[ok, 1]], num_images=len(ann.file_names))
    return gt, int((~ok).sum()), names


def dets_from_file(pred: HICOFile, names: Dict[str, int]) -> HOIDetections:
    """Flat detections of a prediction file, rows ordered by the annotation file's image
    order (``names``), then by their order inside the entry (the tie-break order of equal
    scores). Images without an entry have no detections."""
    img_of_entry = np.empty(len(pred.file_names), dtype=np.int64)
    seen: Dict[str, int] = {}
    for idx, name in enumerate(pred.file_names):
        if name not in names:
            raise ValueError(f'{pred.path} entry {idx} is for image {name!r}, which is not in '
                             'the annotation file')
        if name in seen:
            raise ValueError(f'{pred.path} entries {seen[name]} and {idx} are both for image '
                             f'{name!r}')
        seen[name] = idx
        img_of_entry[idx] = names[name]
    img = np.repeat(img_of_entry, pred.n_hois)
    hois, scores = pred.hois, pred.scores
    if len(img) > 1 and (np.diff(img) < 0).any():  # entries not in annotation order
        order = np.argsort(img, kind='stable')
        img, hois, scores = img[order], hois[order], scores[order]
    cls = pred.table.hoi_class(hois[:, 2], pred.labels[hois[:, 1]])
    return HOIDetections(img=img, cls=cls, sub=pred.boxes[hois[:, 0]],
                         obj=pred.boxes[hois[:, 1]], score=scores)


def gt_from_images(images: Sequence[dict], table: Optional[HOIClassTable] = None
                   ) -> Tuple[HOIGroundTruth, int]:
    """Flat GT pairs of per-image dicts (``bboxes`` (N, 4), ``labels`` (N,), ``hois`` (M, 3)
    rows subject, object, verb; labels and verbs of ``table``, HICO-DET's by default). Returns
    the GT and the number of annotated HOIs that are none of the table's classes (left out)."""
    meta = table or hico_meta()
    if not images:
        return HOIGroundTruth(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)),
                              num_images=0), 0
    boxes = [np.asarray(g['bboxes'], dtype=np.float64).reshape(-1, 4) for g in images]
    hois = [np.asarray(g['hois'], dtype=np.int64).reshape(-1, 3) for g in images]
    n_box = np.array([len(b) for b in boxes])
    n_hoi = np.array([len(h) for h in hois])
    offset = np.repeat(np.cumsum(n_box) - n_box, n_hoi)  # image's first box in the flat list
    boxes = np.concatenate(boxes)
    labels = np.concatenate([np.asarray(g['labels'], dtype=np.int64).reshape(-1)
                             for g in images])
    hois = np.concatenate(hois)
    sub, obj = hois[:, 0] + offset, hois[:, 1] + offset
    cls = meta.hoi_class(hois[:, 2], labels[obj])
    ok = cls >= 0
    img = np.repeat(np.arange(len(images)), n_hoi)
    return HOIGroundTruth(img=img[ok], cls=cls[ok], sub=boxes[sub[ok]], obj=boxes[obj[ok]],
                          num_images=len(images)), int((~ok).sum())


def dets_from_triplets(preds: Sequence[dict]) -> HOIDetections:
    """Flat detections of per-image dicts (``sub`` (K, 4), ``obj`` (K, 4), ``cls`` (K,) HOI
    class or -1, ``score`` (K,)); the list position is the image index."""
    n = [len(p['score']) for p in preds]
    def cat(key: str, shape: tuple) -> np.ndarray:
        if not preds:
            return np.zeros((0,) + shape[1:])
        return np.concatenate([np.asarray(p[key]).reshape(shape) for p in preds])

    return HOIDetections(img=np.repeat(np.arange(len(preds)), n), cls=cat('cls', (-1,)),
                         sub=cat('sub', (-1, 4)), obj=cat('obj', (-1, 4)),
                         score=cat('score', (-1,)))


def format_summary(summary: Dict[str, float], title: str = 'HICO-DET') -> str:
    """Two-row table (Default, Known Object) of Full/Rare/Non-rare mAP in percent."""
    row = '{:<16}{:>9}{:>9}{:>10}'
    def pct(key: str) -> str:
        return f'{100 * summary[key]:.2f}'

    lines = [f'{title} mAP (%)', row.format('setting', 'Full', 'Rare', 'Non-rare'),
             row.format('Default', pct('mAP'), pct('mAP_rare'), pct('mAP_non_rare'))]
    if 'mAP_ko' in summary:
        lines.append(row.format('Known Object', pct('mAP_ko'), pct('mAP_ko_rare'),
                                pct('mAP_ko_non_rare')))
    lines.append(f'mean max recall (%): {pct("mRec")}')
    return '\n'.join(lines)


def write_per_class_ap(path: str, result: HOIEvalResult,
                       table: Optional[HOIClassTable] = None) -> None:
    """CSV with one row per HOI class: id, verb, object, rare, GT count, AP, KO AP, recall."""
    meta = table or hico_meta()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['hoi_id', 'verb', 'object', 'rare', 'n_gt', 'ap', 'ap_ko', 'recall'])
        for c in range(len(result.ap)):
            writer.writerow([
                c + 1, meta.verb_names[meta.hoi_verb[c]], meta.object_names[meta.hoi_object[c]],
                int(meta.rare[c]), int(result.npos[c]), f'{result.ap[c]:.6f}',
                '' if result.ap_ko is None else f'{result.ap_ko[c]:.6f}',
                f'{result.recall[c]:.6f}'])
