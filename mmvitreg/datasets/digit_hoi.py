"""Digit HOI: interaction scenes in the HICO-DET JSON layout, from scikit-learn's digits.

Each scene holds one or two *subjects* (rings: circle outlines of random size and colour) and
handwritten digits (the objects, classes ``'0'``..``'9'``) drawn as in :mod:`.digit_scenes`.
A (ring, digit) pair interacts when the two are *near* (the gap between their boxes is at most
``near_gap`` times the ring's size); its verbs then depend on the pair, never on one box alone:

- exactly one of ``left_of``, ``right_of``, ``above``, ``below``: where the digit lies relative to
  the ring (the dominant axis of the offset between the box centres);
- ``touch``: the two boxes overlap;
- ``larger``: the digit's box has a larger area than the ring's (``larger_ratio`` times).

Far digits are distractors with no interaction. Scenes whose geometry would make a label
ambiguous (offsets near the diagonal, gaps or area ratios near a threshold) are rejected while
composing, so labels are exact functions of the drawn boxes. HOI classes are the 6 verbs x 10
digits = 60 (verb, digit) pairs. Interacting digits are drawn from a long-tailed class
distribution in the training split (``train_tail``: digit k has weight ``(k + 1) ** -train_tail``
in a per-seed order) and uniformly in validation and test, so the classes with fewer than
``rare_below`` training instances form a *rare* split (as HICO-DET's < 10), measured on a
balanced test set.

:func:`make_digit_hoi` writes ``annotations/{trainval,val,test}_hico.json``, the class table
``annotations/hoi_classes.json`` (an :class:`HOIClassTable` as metainfo) and PNG images
under ``images/{train,val,test}/``; :class:`DigitHOIDataset` generates it on first use.
"""
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .digit_scenes import (DIGIT_NAMES, GLYPH_SPLITS, Placed, SceneStyle, _split_seed, _style_dict,
                           _write_png, add_clutter, background, contrasting_colour, finish,
                           glyph_pool, ink_box, paint, place_digit, prepare_cached)
from .hico_meta import HOIClassTable

__all__ = ['HOIStyle', 'DIGIT_HOI_VERBS', 'SUBJECT_NAME', 'pair_verbs', 'compose_hoi_scene',
           'digit_hoi_table', 'make_digit_hoi', 'DigitHOIDataset']

DIGIT_HOI_VERBS = ('left_of', 'right_of', 'above', 'below', 'touch', 'larger')
SUBJECT_NAME = 'ring'
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class HOIStyle:
    """Interaction rules and scene content of digit HOI scenes (sizes in pixels).

    Args:
        subjects: inclusive range of rings per scene.
        partners: inclusive range of interacting digits per ring.
        distractors: inclusive range of far, non-interacting digits per scene.
        ring_size: inclusive range of a ring's diameter.
        near_gap: a pair is near when the gap between the boxes is <= near_gap * ring size; far
            digits keep a gap >= 2 * near_gap * ring size.
        dominance: the dominant axis of the centre offset must be this many times the other.
        larger_ratio: ``larger`` when the digit's box area >= this times the ring's; pairs
            with a ratio strictly between 1 and ``larger_ratio`` are not drawn.
        touch_prob, larger_prob: how often a partner is placed touching / larger.
        train_tail: exponent of the long-tailed digit distribution of training partners.
        rare_below: HOI classes with fewer training instances are *rare*.
    """
    subjects: Tuple[int, int] = (1, 2)
    partners: Tuple[int, int] = (1, 3)
    distractors: Tuple[int, int] = (0, 1)
    ring_size: Tuple[int, int] = (16, 24)
    near_gap: float = 0.5
    dominance: float = 1.5
    larger_ratio: float = 1.6
    touch_prob: float = 0.35
    larger_prob: float = 0.4
    train_tail: float = 0.5
    rare_below: int = 40

    def __post_init__(self):
        for name in ('subjects', 'partners', 'distractors', 'ring_size'):
            value = getattr(self, name)
            minimum = 1 if name in ('subjects', 'ring_size') else 0
            if (len(value) != 2 or not all(isinstance(v, (int, np.integer)) for v in value)
                    or not minimum <= value[0] <= value[1]):
                raise ValueError(f'HOIStyle {name} must be (lo, hi) integers with {minimum} <= '
                                 f'lo <= hi, got {value}')
        for name in ('near_gap', 'touch_prob', 'larger_prob', 'train_tail'):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f'HOIStyle {name} must be a finite number >= 0, got {value}')
        if self.dominance <= 1 or self.larger_ratio <= 1:
            raise ValueError('HOIStyle dominance and larger_ratio must be > 1, got '
                             f'{self.dominance} and {self.larger_ratio}')


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    """Gap between two boxes: > 0 apart (Chebyshev distance of the boxes), <= 0 overlapping."""
    dx = max(a[0] - b[2], b[0] - a[2])
    dy = max(a[1] - b[3], b[1] - a[3])
    return float(max(dx, dy))


def _area(box: Sequence[float]) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def pair_verbs(ring: Sequence[float], digit: Sequence[float], style: HOIStyle = HOIStyle()
               ) -> Optional[List[int]]:
    """Verbs (indices into :data:`DIGIT_HOI_VERBS`) of a (ring box, digit box) pair.

    Returns ``[]`` for a far pair (no interaction) and ``None`` when the geometry is ambiguous
    (between near and far, offset near a diagonal, touching by less than a pixel, area ratio
    between 1 and ``larger_ratio``), which scene composition rejects.
    """
    size = max(ring[2] - ring[0], ring[3] - ring[1])
    gap = _gap(ring, digit)
    if gap > 2 * style.near_gap * size:
        return []
    if gap > style.near_gap * size or -1 < gap < 2:  # between near and far, or barely touching
        return None
    dx = (digit[0] + digit[2] - ring[0] - ring[2]) / 2
    dy = (digit[1] + digit[3] - ring[1] - ring[3]) / 2
    if abs(dx) >= style.dominance * abs(dy):
        verbs = [0 if dx < 0 else 1]
    elif abs(dy) >= style.dominance * abs(dx):
        verbs = [2 if dy < 0 else 3]
    else:
        return None
    if gap < 0:
        verbs.append(4)
    ratio = _area(digit) / max(_area(ring), 1e-9)
    if ratio >= style.larger_ratio:
        verbs.append(5)
    elif ratio > 1.0:
        return None
    return verbs


def ring_alpha(diameter: int, thickness: int) -> np.ndarray:
    """Alpha map of a circle outline inside a ``diameter`` x ``diameter`` square."""
    import cv2
    canvas = np.zeros((diameter * 4, diameter * 4), np.float32)
    r = diameter * 2 - thickness * 2
    cv2.circle(canvas, (diameter * 2, diameter * 2), r, 1.0, thickness * 4, lineType=cv2.LINE_AA)
    return np.clip(cv2.resize(canvas, (diameter, diameter), interpolation=cv2.INTER_AREA), 0, 1)


def _partner_position(rng: np.random.Generator, ring: Sequence[int], h: int, w: int,
                      direction: int, touch: bool, style: HOIStyle) -> Tuple[int, int]:
    size = max(ring[2] - ring[0], ring[3] - ring[1])
    cx, cy = (ring[0] + ring[2]) / 2, (ring[1] + ring[3]) / 2
    gap = -rng.uniform(1.5, max(1.6, 0.25 * min(h, w))) if touch else rng.uniform(
        2.5, style.near_gap * size - 0.5)
    along = rng.uniform(-0.25, 0.25)
    if direction in (0, 1):  # left_of / right_of
        x = ring[0] - gap - w if direction == 0 else ring[2] + gap
        y = cy - h / 2 + along * size
    else:  # above / below
        y = ring[1] - gap - h if direction == 2 else ring[3] + gap
        x = cx - w / 2 + along * size
    return int(round(x)), int(round(y))


def _digit_weights(seed: int, tail: float) -> np.ndarray:
    order = np.random.default_rng([seed, 7]).permutation(10)
    weights = np.empty(10)
    weights[order] = (np.arange(10) + 1.0)**-tail
    return weights / weights.sum()


def compose_hoi_scene(seed: int, scene: SceneStyle = SceneStyle(), hoi: HOIStyle = HOIStyle(),
                      split: str = 'train', digit_weights: Optional[np.ndarray] = None,
                      tries: int = 50) -> Tuple[np.ndarray, List[Tuple[int, Tuple[int, ...]]],
                                                List[Tuple[int, int, int]]]:
    """One HOI scene, a pure function of its arguments.

    Returns:
        ``(image uint8 HxWx3 RGB, boxes, hois)``: boxes ``[(label, (x1, y1, x2, y2))]`` with
        label 0 for rings and ``1 + digit`` for digits; hois ``[(subject index, object index,
        verb)]`` for every near (ring, digit) pair and each of its verbs.
    """
    rng = np.random.default_rng(seed)
    glyphs, labels = glyph_pool(split)
    weights = np.full(10, 0.1) if digit_weights is None else np.asarray(digit_weights)
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    img_h, img_w = scene.image_size
    for _ in range(tries):
        placed: List[Placed] = []
        ring_ids: List[int] = []
        ok = True
        for _ in range(int(rng.integers(hoi.subjects[0], hoi.subjects[1] + 1))):
            d = int(rng.integers(hoi.ring_size[0], hoi.ring_size[1] + 1))
            alpha = ring_alpha(d, max(1, d // 8))
            x, y = int(rng.integers(0, img_w - d + 1)), int(rng.integers(0, img_h - d + 1))
            box = ink_box(alpha)
            abs_box = (x + box[0], y + box[1], x + box[2], y + box[3])
            if any(_gap(abs_box, p.box) < 2 * hoi.near_gap * d + 2 for p in placed):
                continue
            placed.append(Placed(-1, abs_box, alpha, (x, y)))
            ring_ids.append(len(placed) - 1)
        for r in list(ring_ids):
            ring = placed[r].box
            size = max(ring[2] - ring[0], ring[3] - ring[1])
            for _ in range(int(rng.integers(hoi.partners[0], hoi.partners[1] + 1))):
                digit = int(rng.choice(10, p=weights))
                glyph = glyphs[rng.choice(by_digit[digit])]
                larger = rng.random() < hoi.larger_prob
                area_ratio = rng.uniform(hoi.larger_ratio * 1.1, hoi.larger_ratio * 2.2) \
                    if larger else rng.uniform(0.25, 0.9)
                height = int(np.clip(round(size * np.sqrt(area_ratio)), scene.digit_height[0],
                                     min(scene.digit_height[1], img_h)))
                pos = _partner_position(rng, ring, height, height, int(rng.integers(4)),
                                        rng.random() < hoi.touch_prob, hoi)
                new = place_digit(rng, scene, glyph, digit, placed, height=height, position=pos)
                if new is not None:
                    placed.append(new)
        for _ in range(int(rng.integers(hoi.distractors[0], hoi.distractors[1] + 1))):
            k = int(rng.integers(len(labels)))
            new = place_digit(rng, scene, glyphs[k], int(labels[k]), placed)
            if new is not None:
                placed.append(new)
        hois = []
        for r in ring_ids:
            for j, p in enumerate(placed):
                if p.label < 0:
                    continue
                verbs = pair_verbs(placed[r].box, p.box, hoi)
                if verbs is None:
                    ok = False
                    break
                hois += [(r, j, v) for v in verbs]
            if not ok:
                break
        if ok and hois:
            break
    canvas = background(rng, img_h, img_w)
    add_clutter(rng, canvas, int(rng.integers(scene.clutter[0], scene.clutter[1] + 1)))
    for p in placed:
        x, y = p.origin
        h, w = p.alpha.shape
        colour = contrasting_colour(rng, canvas[y:y + h, x:x + w], scene.min_contrast)
        paint(canvas, p.alpha, colour, x, y)
    boxes = [(0 if p.label < 0 else 1 + p.label, p.box) for p in placed]
    return finish(rng, canvas, scene), boxes, hois


def digit_hoi_table(rare: Optional[Sequence[bool]] = None) -> HOIClassTable:
    """The class table of digit HOI: boxes ``ring`` (``category_id`` 1) and digits ``'0'``..``'9'``
    (ids 2..11); HOI class ``v * 10 + d`` is (verb v, digit d); ``rare`` flags per class."""
    num = len(DIGIT_HOI_VERBS) * 10
    classes = np.arange(num)
    return HOIClassTable((SUBJECT_NAME, ) + DIGIT_NAMES, DIGIT_HOI_VERBS, classes // 10,
                         classes % 10 + 1, np.zeros(num, bool) if rare is None else rare,
                         category_ids=range(1, 12), source='digit HOI class table')


def make_digit_hoi(root: str, num_train: int = 2000, num_val: int = 250, num_test: int = 1000,
                   seed: int = 0, style: Optional[dict] = None,
                   hoi_style: Optional[dict] = None) -> Dict[str, str]:
    """Write digit HOI scenes in the HICO-DET JSON layout under ``root`` (no caching).

    Boxes use ``category_id`` 1 for rings and ``2 + digit`` for digits; ``hoi_annotation``
    entries carry the verb id (1..6) and, in training, ``hoi_category_id`` (1..60). The class
    table, with the rare split counted on the training split, is written to
    ``annotations/hoi_classes.json`` (:meth:`HOIClassTable.to_metainfo` keys).
    """
    scene = SceneStyle(**_style_dict(style))
    rules = HOIStyle(**_hoi_style_dict(hoi_style))
    counts = dict(train=num_train, val=num_val, test=num_test)
    for split, num in counts.items():
        if not isinstance(num, (int, np.integer)) or num < 0:
            raise ValueError(f'make_digit_hoi num_{split} must be an integer >= 0, got {num!r}')
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    paths = dict(data_root=root)
    train_counts = np.zeros(len(DIGIT_HOI_VERBS) * 10, dtype=np.int64)
    for split, num in counts.items():
        weights = _digit_weights(seed, rules.train_tail) if split == 'train' else None
        img_dir = osp.join(root, 'images', split)
        os.makedirs(img_dir, exist_ok=True)
        entries = []
        for i in range(num):
            image, boxes, hois = compose_hoi_scene(_split_seed(seed, split, i), scene, rules,
                                                   split, weights)
            file_name = f'{split}_{i:06d}.png'
            _write_png(osp.join(img_dir, file_name), image)
            annotations = [dict(bbox=list(box), category_id=label + 1) for label, box in boxes]
            hoi_annotation = []
            for s, o, v in hois:
                cls = v * 10 + boxes[o][0] - 1
                item = dict(subject_id=s, object_id=o, category_id=v + 1)
                if split == 'train':
                    item['hoi_category_id'] = cls + 1
                    train_counts[cls] += 1
                hoi_annotation.append(item)
            entries.append(dict(file_name=file_name, img_id=i, height=image.shape[0],
                                width=image.shape[1], annotations=annotations,
                                hoi_annotation=hoi_annotation))
        name = 'trainval' if split == 'train' else split
        path = osp.join(root, 'annotations', f'{name}_hico.json')
        with open(path, 'w') as f:
            json.dump(entries, f)
        paths[split] = path
    table = osp.join(root, 'annotations', 'hoi_classes.json')
    with open(table, 'w') as f:
        json.dump(digit_hoi_table(train_counts < rules.rare_below).to_metainfo(), f, indent=1)
    paths['class_table'] = table
    return paths


def _hoi_style_dict(style: Optional[dict]) -> dict:
    style = dict(style or {})
    known = set(HOIStyle.__dataclass_fields__)
    bad = sorted(set(style) - known)
    if bad:
        raise ValueError(f'unknown HOI style key(s) {bad}; known: {sorted(known)}')
    return {k: tuple(v) if isinstance(v, list) else v for k, v in style.items()}


def _register_dataset():
    from mmvitreg.registry import DATASETS
    from .hico_det import HICODetDataset

    @DATASETS.register_module()
    class DigitHOIDataset(HICODetDataset):
        """:class:`HICODetDataset` over digit HOI scenes, generated on first use into
        ``data_root``; the class table comes from the generated ``annotations/hoi_classes.json``.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'`` (sets ``ann_file``, the image folder and
                ``test_mode``).
            num_train, num_val, num_test, seed, style, hoi_style: see :func:`make_digit_hoi`;
                the folder is regenerated when they change.
            Everything else goes to :class:`HICODetDataset`.
        """

        METAINFO = digit_hoi_table().to_metainfo()

        def __init__(self, split: str = 'train', num_train: int = 2000, num_val: int = 250,
                     num_test: int = 1000, seed: int = 0, style: Optional[dict] = None,
                     hoi_style: Optional[dict] = None, data_root: str = 'data/digit_hoi/',
                     **kwargs):
            if split not in GLYPH_SPLITS:
                raise ValueError(f'DigitHOIDataset split must be one of {GLYPH_SPLITS}, '
                                 f'got {split!r}')
            params = dict(kind='hoi', version=_FORMAT_VERSION, num_train=num_train,
                          num_val=num_val, num_test=num_test, seed=seed,
                          style=asdict(SceneStyle(**_style_dict(style))),
                          hoi_style=asdict(HOIStyle(**_hoi_style_dict(hoi_style))))
            prepare_cached(data_root, params, lambda tmp: make_digit_hoi(
                tmp, num_train, num_val, num_test, seed, style, hoi_style))
            name = 'trainval' if split == 'train' else split
            kwargs.setdefault('ann_file', f'annotations/{name}_hico.json')
            kwargs.setdefault('data_prefix', dict(img=f'images/{split}/'))
            kwargs.setdefault('test_mode', split != 'train')
            kwargs.setdefault('class_table', 'annotations/hoi_classes.json')
            super().__init__(data_root=data_root, **kwargs)

    return DigitHOIDataset


DigitHOIDataset = _register_dataset()
