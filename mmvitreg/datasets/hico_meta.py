"""HOI class tables: HICO-DET's (600 HOI classes, 117 verbs, 80 objects, rare split) and custom
ones described in a data set's metainfo; id conversions.

Everything is read once from the package's own copy of the class table
(``mmvitreg/data/hico_600_classes.csv``), compiled from the public HICO-DET release. The rare
split (138 classes with fewer than 10 *training* instances) is the official one shipped with the
table; it is never recomputed from whatever split happens to be loaded.

Id spaces used across the project:

- HOI class: ``hoi_id`` 1..600 in files, ``hoi`` 0..599 (``hoi_id - 1``) in arrays.
- verb: ``verb_id`` 1..117 in files, ``verb`` 0..116 in arrays.
- object: COCO's 91-id space in files (``category_id``, 1 = person), contiguous COCO order
  0..79 in arrays (``labels``; person = 0).

A custom table keeps the same id spaces with its own sizes: HOI class ``0..C-1`` (``C`` = number
of HOI classes), verbs ``1..V`` in files, and its own ``category_ids`` for the box classes.
"""
import csv
import json
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'NUM_HOI_CLASSES', 'NUM_VERBS', 'NUM_OBJECTS', 'NUM_RARE', 'HICO_CSV', 'HOIClassTable',
    'HICOMeta', 'TABLE_KEYS', 'hico_meta', 'build_corre_matrix', 'coco91_to_contiguous',
    'contiguous_to_coco91',
]

NUM_HOI_CLASSES = 600
NUM_VERBS = 117
NUM_OBJECTS = 80
NUM_RARE = 138
HICO_CSV = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                    'hico_600_classes.csv')


class HOIClassTable:
    """An HOI class table: box classes, verbs, HOI classes (verb, object) and the rare split.

    HICO-DET's table (:func:`hico_meta`) is the default everywhere; a data set with its own
    classes describes them in its metainfo (:meth:`to_metainfo` / :meth:`from_metainfo`), which
    :class:`~mmvitreg.datasets.HICODetDataset` reads from a ``class_table`` file and
    :class:`~mmvitreg.evaluation.HICODetMetric` receives as ``dataset_meta``.

    Attributes:
        hoi_verb: (C,) verb index of each HOI class.
        hoi_object: (C,) object label (index into ``object_names``) of each HOI class.
        rare: (C,) bool, the rare split (HICO-DET: fewer than 10 training instances, 138).
        verb_names: verb names (index = verb; the file id is index + 1).
        object_names: box class names (index = label).
        category_ids: (num_objects,) ``category_id`` of each label in annotation files (COCO's
            91-id space for HICO-DET, ``coco91_ids``).
        hoi_names: ``'<verb> <object>'`` per HOI class.
        hoi_lookup: (num_verbs, num_objects) int64 HOI class of (verb, object), -1 if none.
        n_test_pairs: (C,) annotated test pairs per class when known (HICO-DET), else None.
    """

    def __init__(self, object_names: Sequence[str], verb_names: Sequence[str],
                 hoi_verb: Sequence[int], hoi_object: Sequence[int], rare: Sequence[bool],
                 category_ids: Optional[Sequence[int]] = None,
                 n_test_pairs: Optional[Sequence[int]] = None, source: str = 'HOI class table'):
        self.object_names: Tuple[str, ...] = tuple(str(n) for n in object_names)
        self.verb_names: Tuple[str, ...] = tuple(str(n) for n in verb_names)
        num_obj, num_verb = len(self.object_names), len(self.verb_names)
        self.hoi_verb = np.asarray(hoi_verb, dtype=np.int64).reshape(-1)
        self.hoi_object = np.asarray(hoi_object, dtype=np.int64).reshape(-1)
        self.rare = np.asarray(rare, dtype=bool).reshape(-1)
        num = len(self.hoi_verb)
        if not num_obj or not num_verb or not num:
            raise ValueError(f'{source} needs at least one object, verb and HOI class')
        if len(self.hoi_object) != num or len(self.rare) != num:
            raise ValueError(f'{source}: hoi_verbs, hoi_objects and hoi_rare must have one entry '
                             f'per HOI class ({num}), got {len(self.hoi_object)} and '
                             f'{len(self.rare)}')
        if self.hoi_verb.min() < 0 or self.hoi_verb.max() >= num_verb:
            raise ValueError(f'{source}: hoi_verbs must be verb indices in 0..{num_verb - 1}')
        if self.hoi_object.min() < 0 or self.hoi_object.max() >= num_obj:
            raise ValueError(f'{source}: hoi_objects must be object labels in 0..{num_obj - 1}')
        ids = np.arange(1, num_obj + 1) if category_ids is None else category_ids
        self.category_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if (len(self.category_ids) != num_obj or self.category_ids.min() < 0
                or len(np.unique(self.category_ids)) != num_obj):
            raise ValueError(f'{source}: category_ids must be {num_obj} distinct non-negative '
                             'integers, one per object class')
        self.n_test_pairs = None if n_test_pairs is None else np.asarray(n_test_pairs,
                                                                         dtype=np.int64)
        self.hoi_names: Tuple[str, ...] = tuple(
            f'{self.verb_names[v]} {self.object_names[o]}'
            for v, o in zip(self.hoi_verb, self.hoi_object))
        lookup = np.full((num_verb, num_obj), -1, dtype=np.int64)
        lookup[self.hoi_verb, self.hoi_object] = np.arange(num)
        if (lookup >= 0).sum() != num:
            raise ValueError(f'{source} lists a (verb, object) combination twice')
        self.hoi_lookup = lookup
        # file category_id -> label (-1 for ids that are no class)
        inv = np.full(int(self.category_ids.max()) + 1, -1, dtype=np.int64)
        inv[self.category_ids] = np.arange(num_obj)
        self._category_inv = inv
        for arr in (self.hoi_verb, self.hoi_object, self.rare, self.category_ids,
                    self.hoi_lookup, self._category_inv, self.n_test_pairs):
            if arr is not None:
                arr.setflags(write=False)

    # ------------------------------------------------------------------ sizes and splits
    @property
    def num_hoi_classes(self) -> int:
        return len(self.hoi_verb)

    @property
    def num_verbs(self) -> int:
        return len(self.verb_names)

    @property
    def num_objects(self) -> int:
        return len(self.object_names)

    @property
    def rare_ids(self) -> np.ndarray:
        """0-based indices of the rare HOI classes."""
        return np.flatnonzero(self.rare)

    @property
    def non_rare_ids(self) -> np.ndarray:
        """0-based indices of the non-rare HOI classes."""
        return np.flatnonzero(~self.rare)

    # ------------------------------------------------------------------ id conversions
    def category_to_label(self, ids) -> np.ndarray:
        """Map file ``category_id`` values to labels (-1 where no class has that id)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(ids.shape, -1, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(self._category_inv))
        out[ok] = self._category_inv[ids[ok]]
        return out

    def label_to_category(self, labels) -> np.ndarray:
        """Map labels to file ``category_id`` values."""
        return self.category_ids[np.asarray(labels, dtype=np.int64)]

    def hoi_class(self, verbs, labels) -> np.ndarray:
        """HOI class of each (verb, object label); -1 if the pair is not a class."""
        verbs = np.asarray(verbs, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        num_verb, num_obj = self.hoi_lookup.shape
        if verbs.shape == labels.shape and verbs.size and verbs.min() >= 0 and \
                verbs.max() < num_verb and labels.min() >= 0 and labels.max() < num_obj:
            return self.hoi_lookup[verbs, labels]  # fast path: all ids in range
        out = np.full(np.broadcast(verbs, labels).shape, -1, dtype=np.int64)
        vb, lb = np.broadcast_arrays(verbs, labels)
        ok = (vb >= 0) & (vb < num_verb) & (lb >= 0) & (lb < num_obj)
        out[ok] = self.hoi_lookup[vb[ok], lb[ok]]
        return out

    def corre_matrix(self) -> np.ndarray:
        """(num_verbs, num_objects) bool: True where (verb, object) is an HOI class (QPIC's
        ``corre_hico.npy`` for HICO-DET)."""
        return self.hoi_lookup >= 0

    # HICO-DET names of the same things (COCO's 91-id space)
    coco91_ids = property(lambda self: self.category_ids)
    coco91_to_label = category_to_label
    label_to_coco91 = label_to_category

    # ------------------------------------------------------------------ metainfo
    def to_metainfo(self) -> Dict[str, tuple]:
        """The table as dataset metainfo: ``classes``, ``category_ids``, ``verb_classes``,
        ``hoi_classes`` (display names), ``hoi_verbs``, ``hoi_objects``, ``hoi_rare``."""
        return dict(classes=self.object_names,
                    category_ids=tuple(int(i) for i in self.category_ids),
                    verb_classes=self.verb_names, hoi_classes=self.hoi_names,
                    hoi_verbs=tuple(int(v) for v in self.hoi_verb),
                    hoi_objects=tuple(int(o) for o in self.hoi_object),
                    hoi_rare=tuple(bool(r) for r in self.rare))

    @classmethod
    def from_metainfo(cls, meta: Optional[Mapping], source: str = 'dataset metainfo'
                      ) -> 'HOIClassTable':
        """The table a metainfo describes; HICO-DET's when ``meta`` has none of
        :data:`TABLE_KEYS` (e.g. a plain HICO-DET config). A partial description is an error."""
        meta = meta or {}
        present = [k for k in TABLE_KEYS if k in meta]
        if not present:
            return hico_meta()
        missing = [k for k in TABLE_KEYS if k not in meta]
        if missing:
            raise KeyError(f'{source} describes an HOI class table partly: it has {present} '
                           f'but not {missing}')
        table = cls(meta['classes'], meta['verb_classes'], meta['hoi_verbs'],
                    meta['hoi_objects'], meta['hoi_rare'], meta.get('category_ids'),
                    source=source)
        if table.to_metainfo() == hico_meta().to_metainfo():
            return hico_meta()
        return table

    @classmethod
    def from_file(cls, path: str) -> 'HOIClassTable':
        """Read a table: a ``.json`` file holding the :meth:`to_metainfo` keys, or a ``.csv``
        in the layout of the package's HICO-DET table."""
        if not osp.isfile(path):
            raise FileNotFoundError(f'HOI class table not found: {path}')
        if path.endswith('.json'):
            with open(path) as f:
                try:
                    meta = json.load(f)
                except json.JSONDecodeError as exc:
                    raise ValueError(f'HOI class table {path} is not valid JSON ({exc.msg} at '
                                     f'line {exc.lineno})') from None
            if not isinstance(meta, dict):
                raise ValueError(f'HOI class table {path} must hold a JSON object with keys '
                                 f'{list(TABLE_KEYS)}')
            return cls.from_metainfo(meta, source=f'HOI class table {path}')
        with open(path, newline='') as f:
            return _table_from_csv_rows(list(csv.DictReader(f)), path)


TABLE_KEYS = ('classes', 'verb_classes', 'hoi_verbs', 'hoi_objects', 'hoi_rare')
HICOMeta = HOIClassTable  # the name of earlier releases


def _table_from_csv_rows(rows: List[Dict[str, str]], path: str) -> HOIClassTable:
    """A table from rows in the layout of ``hico_600_classes.csv`` (HOI id, verb id and name,
    object ids, object name, rare flag, test pairs)."""
    if not rows:
        raise ValueError(f'HOI class table {path} has no rows')
    cols = list(rows[0].keys())

    def col(prefix: str) -> str:
        if prefix in cols:
            return prefix
        for name in cols:
            if name.startswith(prefix):
                return name
        raise ValueError(f'HOI class table {path} has no column starting with {prefix!r}')

    c_hoi, c_verb, c_vname = col('hoi_category_id'), col('verb_id'), col('verb')
    c_coco, c_contig = col('coco_obj_id'), col('obj_contiguous_idx')
    c_oname, c_rare, c_ntest = col('object'), col('rare'), col('n_test_pairs')
    rows = sorted(rows, key=lambda r: int(r[c_hoi]))
    if [int(r[c_hoi]) for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f'HOI class table {path} must list hoi ids 1..{len(rows)} once each')
    num_verb = max(int(r[c_verb]) for r in rows)
    num_obj = max(int(r[c_contig]) for r in rows) + 1
    verb_names, object_names = [''] * num_verb, [''] * num_obj
    category_ids = np.zeros(num_obj, dtype=np.int64)
    for r in rows:
        verb_names[int(r[c_verb]) - 1] = r[c_vname]
        label = int(r[c_contig])
        object_names[label] = r[c_oname]
        category_ids[label] = int(r[c_coco])
    if '' in verb_names or '' in object_names:
        raise ValueError(f'HOI class table {path} must cover verbs 1..{num_verb} and objects '
                         f'0..{num_obj - 1}')
    return HOIClassTable(object_names, verb_names, [int(r[c_verb]) - 1 for r in rows],
                         [int(r[c_contig]) for r in rows], [int(r[c_rare]) == 1 for r in rows],
                         category_ids, [int(r[c_ntest]) for r in rows],
                         source=f'HOI class table {path}')


@lru_cache(maxsize=None)
def _load(path: str) -> HOIClassTable:
    if not osp.isfile(path):
        raise FileNotFoundError(f'HICO class table not found: {path}')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if len(rows) != NUM_HOI_CLASSES:
        raise ValueError(f'HICO class table {path} must have {NUM_HOI_CLASSES} rows, '
                         f'got {len(rows)}')
    table = _table_from_csv_rows(rows, path)
    if (table.num_verbs, table.num_objects) != (NUM_VERBS, NUM_OBJECTS):
        raise ValueError(f'HICO class table {path} must cover {NUM_VERBS} verbs and '
                         f'{NUM_OBJECTS} objects')
    return table


def hico_meta(path: str = HICO_CSV) -> HOIClassTable:
    """The (cached) HICO-DET class table of the package, or of another CSV of the same layout."""
    return _load(osp.abspath(path))


def build_corre_matrix(meta: Optional[HOIClassTable] = None) -> np.ndarray:
    """(117, 80) bool verb-object validity matrix (``corre_hico.npy`` of QPIC; columns in
    contiguous COCO object order): True where (verb, object) is one of the 600 classes."""
    return (meta or hico_meta()).corre_matrix()


def coco91_to_contiguous(ids) -> np.ndarray:
    """COCO 91-space object ids -> contiguous labels 0..79 (-1 for ids outside the 80)."""
    return hico_meta().coco91_to_label(ids)


def contiguous_to_coco91(labels) -> np.ndarray:
    """Contiguous labels 0..79 -> COCO 91-space object ids."""
    return hico_meta().label_to_coco91(labels)
