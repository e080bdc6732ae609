"""HICO-DET class tables: 600 HOI classes, 117 verbs, 80 objects, rare split, id conversions.

Everything is read once from the package's own copy of the class table
(``mmvitreg/data/hico_600_classes.csv``), compiled from the public HICO-DET release. The rare
split (138 classes with fewer than 10 *training* instances) is the official one shipped with the
table; it is never recomputed from whatever split happens to be loaded.

Id spaces used across the project:

- HOI class: ``hoi_id`` 1..600 in files, ``hoi`` 0..599 (``hoi_id - 1``) in arrays.
- verb: ``verb_id`` 1..117 in files, ``verb`` 0..116 in arrays.
- object: COCO's 91-id space in files (``category_id``, 1 = person), contiguous COCO order
  0..79 in arrays (``labels``; person = 0), and HICO's alphabetical order 0..79 (used by the
  original MATLAB toolkit; only offered for conversion).
"""
import csv
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

__all__ = [
    'NUM_HOI_CLASSES', 'NUM_VERBS', 'NUM_OBJECTS', 'NUM_RARE', 'HICO_CSV', 'HICOMeta',
    'hico_meta', 'build_corre_matrix', 'coco91_to_contiguous', 'contiguous_to_coco91',
]

NUM_HOI_CLASSES = 600
NUM_VERBS = 117
NUM_OBJECTS = 80
NUM_RARE = 138
HICO_CSV = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                    'hico_600_classes.csv')


class HICOMeta:
    """Immutable view of the 600-class table (arrays indexed by 0-based HOI class).

    Attributes:
        hoi_verb: (600,) verb index 0..116 of each HOI class.
        hoi_object: (600,) object index 0..79 (contiguous COCO order) of each HOI class.
        rare: (600,) bool, fewer than 10 training instances (138 classes).
        n_test_pairs: (600,) number of annotated test pairs per class (33,405 in all).
        verb_names: 117 verb names (index = verb).
        object_names: 80 object names in contiguous COCO order (index = label).
        coco91_ids: (80,) COCO 91-space id of each contiguous label (``_valid_obj_ids``).
        hico_alpha: (80,) HICO alphabetical index of each contiguous label.
        hoi_names: 600 names ``'<verb> <object>'``.
        hoi_lookup: (117, 80) int64, HOI class of (verb, object) or -1 when the pair is not
            one of the 600 classes.
    """

    def __init__(self, rows: List[Dict[str, str]], path: str = HICO_CSV):
        if len(rows) != NUM_HOI_CLASSES:
            raise ValueError(f'HICO class table {path} must have {NUM_HOI_CLASSES} rows, '
                             f'got {len(rows)}')
        cols = list(rows[0].keys())

        def col(prefix: str) -> str:
            if prefix in cols:
                return prefix
            for name in cols:
                if name.startswith(prefix):
                    return name
            raise ValueError(f'HICO class table {path} has no column starting with {prefix!r}')

        c_hoi, c_verb, c_vname = col('hoi_category_id'), col('verb_id'), col('verb')
        c_coco, c_contig = col('coco_obj_id'), col('obj_contiguous_idx')
        c_alpha, c_oname = col('hico_obj_idx'), col('object')
        c_rare, c_ntest = col('rare'), col('n_test_pairs')
        rows = sorted(rows, key=lambda r: int(r[c_hoi]))
        if [int(r[c_hoi]) for r in rows] != list(range(1, NUM_HOI_CLASSES + 1)):
            raise ValueError(f'HICO class table {path} must list hoi ids 1..600 once each')
        self.hoi_verb = np.array([int(r[c_verb]) - 1 for r in rows], dtype=np.int64)
        self.hoi_object = np.array([int(r[c_contig]) for r in rows], dtype=np.int64)
        self.rare = np.array([int(r[c_rare]) == 1 for r in rows], dtype=bool)
        self.n_test_pairs = np.array([int(r[c_ntest]) for r in rows], dtype=np.int64)
        verb_names = [''] * NUM_VERBS
        object_names = [''] * NUM_OBJECTS
        coco91 = np.zeros(NUM_OBJECTS, dtype=np.int64)
        alpha = np.zeros(NUM_OBJECTS, dtype=np.int64)
        for r in rows:
            verb_names[int(r[c_verb]) - 1] = r[c_vname]
            label = int(r[c_contig])
            object_names[label] = r[c_oname]
            coco91[label] = int(r[c_coco])
            alpha[label] = int(r[c_alpha])
        if '' in verb_names or '' in object_names:
            raise ValueError(f'HICO class table {path} must cover 117 verbs and 80 objects')
        self.verb_names: Tuple[str, ...] = tuple(verb_names)
        self.object_names: Tuple[str, ...] = tuple(object_names)
        self.coco91_ids = coco91
        self.hico_alpha = alpha
        self.hoi_names: Tuple[str, ...] = tuple(
            f'{verb_names[v]} {object_names[o]}' for v, o in zip(self.hoi_verb, self.hoi_object))
        lookup = np.full((NUM_VERBS, NUM_OBJECTS), -1, dtype=np.int64)
        lookup[self.hoi_verb, self.hoi_object] = np.arange(NUM_HOI_CLASSES)
        self.hoi_lookup = lookup
        # COCO 91-space id -> contiguous label (-1 for the 11 unused ids and anything else).
        inv = np.full(92, -1, dtype=np.int64)
        inv[coco91] = np.arange(NUM_OBJECTS)
        self._coco91_inv = inv
        for arr in (self.hoi_verb, self.hoi_object, self.rare, self.n_test_pairs,
                    self.coco91_ids, self.hico_alpha, self.hoi_lookup, self._coco91_inv):
            arr.setflags(write=False)

    @property
    def rare_ids(self) -> np.ndarray:
        """0-based indices of the 138 rare HOI classes."""
        return np.flatnonzero(self.rare)

    @property
    def non_rare_ids(self) -> np.ndarray:
        """0-based indices of the 462 non-rare HOI classes."""
        return np.flatnonzero(~self.rare)

    def coco91_to_label(self, ids: np.ndarray) -> np.ndarray:
        """Map COCO 91-space object ids to contiguous labels 0..79 (-1 where unknown)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(ids.shape, -1, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(self._coco91_inv))
        out[ok] = self._coco91_inv[ids[ok]]
        return out

    def label_to_coco91(self, labels: np.ndarray) -> np.ndarray:
        """Map contiguous labels 0..79 to COCO 91-space ids."""
        return self.coco91_ids[np.asarray(labels, dtype=np.int64)]

    def hoi_class(self, verbs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """HOI class (0..599) of each (verb 0..116, object label 0..79); -1 if not a class."""
        verbs = np.asarray(verbs, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if verbs.shape == labels.shape and verbs.size and verbs.min() >= 0 and \
                verbs.max() < NUM_VERBS and labels.min() >= 0 and labels.max() < NUM_OBJECTS:
            return self.hoi_lookup[verbs, labels]  # fast path: all ids in range
        out = np.full(np.broadcast(verbs, labels).shape, -1, dtype=np.int64)
        ok = (verbs >= 0) & (verbs < NUM_VERBS) & (labels >= 0) & (labels < NUM_OBJECTS)
        vb, lb = np.broadcast_arrays(verbs, labels)
        out[ok] = self.hoi_lookup[vb[ok], lb[ok]]
        return out


@lru_cache(maxsize=None)
def _load(path: str) -> HICOMeta:
    if not osp.isfile(path):
        raise FileNotFoundError(f'HICO class table not found: {path}')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return HICOMeta(rows, path)


def hico_meta(path: str = HICO_CSV) -> HICOMeta:
    """The (cached) HICO-DET class table of the package, or of another CSV of the same layout."""
    return _load(osp.abspath(path))


def build_corre_matrix(meta: HICOMeta = None) -> np.ndarray:
    """(117, 80) bool verb-object validity matrix (``corre_hico.npy`` of QPIC; columns in
    contiguous COCO object order): True where (verb, object) is one of the 600 classes."""
    meta = meta or hico_meta()
    return meta.hoi_lookup >= 0


def coco91_to_contiguous(ids) -> np.ndarray:
    """COCO 91-space object ids -> contiguous labels 0..79 (-1 for ids outside the 80)."""
    return hico_meta().coco91_to_label(ids)


def contiguous_to_coco91(labels) -> np.ndarray:
    """Contiguous labels 0..79 -> COCO 91-space object ids."""
    return hico_meta().label_to_coco91(labels)
