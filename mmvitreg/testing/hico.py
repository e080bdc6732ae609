"""Generate small HICO-DET datasets in exactly the on-disk format of the JSON release.

Images show learnable scenes: a "person" (a dark-red body with a skin-coloured head), an
object rectangle whose colour encodes its category, and one coloured link per verb drawn
between the person and the object (colour = verb), on a noisy background. The layout is::

    root/annotations/trainval_hico.json  root/annotations/test_hico.json
    root/annotations/corre_hico.npy      root/images/train2015/  root/images/test2015/
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from mmvitreg.datasets.hico_meta import build_corre_matrix, hico_meta

__all__ = ['make_hico_dataset', 'DEFAULT_HOI_CLASSES']

# (verb, object) names of the default classes: 3 objects x 3 verbs, several verbs per object so
# that merged multi-verb pairs occur.
DEFAULT_HOI_CLASSES = (
    ('ride', 'bicycle'), ('hold', 'bicycle'), ('ride', 'horse'), ('hold', 'horse'),
    ('drink_with', 'cup'), ('hold', 'cup'), ('kick', 'sports_ball'), ('throw', 'sports_ball'),
)


def _resolve_classes(hoi_classes: Union[None, int, Sequence]) -> List[int]:
    """0-based HOI classes from None / a count / 1-based ids / (verb, object) names."""
    meta = hico_meta()
    named = {(meta.verb_names[v], meta.object_names[o]): i
             for i, (v, o) in enumerate(zip(meta.hoi_verb, meta.hoi_object))}
    defaults = [named[name] for name in DEFAULT_HOI_CLASSES if name in named]
    if hoi_classes is None:
        return defaults
    if isinstance(hoi_classes, int):
        if not 1 <= hoi_classes <= 600:
            raise ValueError(f'hoi_classes count must be in 1..600, got {hoi_classes}')
        extra = [i for i in np.linspace(0, 599, 600, dtype=int).tolist() if i not in defaults]
        return (defaults + extra)[:hoi_classes]
    out = []
    for item in hoi_classes:
        if isinstance(item, (tuple, list)):
            if tuple(item) not in named:
                raise ValueError(f'unknown HOI class {tuple(item)!r} (verb, object)')
            out.append(named[tuple(item)])
        else:
            if not 1 <= int(item) <= 600:
                raise ValueError(f'HOI class id must be in 1..600, got {item}')
            out.append(int(item) - 1)
    if not out:
        raise ValueError('hoi_classes must not be empty')
    return out


def _palette(n: int, seed: int) -> np.ndarray:
    """n well-separated BGR colours (golden-ratio hues, fixed saturation/value)."""
    import cv2
    hues = ((np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0 * 179).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 230, np.uint8)], 1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(int)


def _clip_box(box, w: int, h: int) -> List[int]:
    x1, y1, x2, y2 = box
    x1, x2 = int(np.clip(x1, 0, w - 2)), int(np.clip(x2, 1, w - 1))
    y1, y2 = int(np.clip(y1, 0, h - 2)), int(np.clip(y2, 1, h - 1))
    return [x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)]


def _make_image_entry(rng: np.random.Generator, classes: List[int], file_name: str,
                      size_range: Tuple[int, int], pairs_range: Tuple[int, int],
                      multi_verb_prob: float, share_person_prob: float,
                      duplicate_prob: float, train: bool):
    meta = hico_meta()
    w = int(rng.integers(size_range[0], size_range[1] + 1))
    h = int(rng.integers(size_range[0], size_range[1] + 1))
    by_object: Dict[int, List[int]] = {}
    for c in classes:
        by_object.setdefault(int(meta.hoi_object[c]), []).append(c)
    boxes, hois, links = [], [], []
    person = None
    n_pairs = int(rng.integers(pairs_range[0], pairs_range[1] + 1))
    for _ in range(n_pairs):
        cls = int(rng.choice(classes))
        obj_label = int(meta.hoi_object[cls])
        chosen = [cls]
        others = [c for c in by_object[obj_label] if c != cls]
        if others and rng.random() < multi_verb_prob:
            chosen.append(int(rng.choice(others)))
        if person is None or rng.random() >= share_person_prob:
            pw, ph = rng.uniform(0.18, 0.3) * w, rng.uniform(0.4, 0.6) * h
            px, py = rng.uniform(0, w - pw), rng.uniform(0, h - ph)
            boxes.append(dict(bbox=_clip_box([px, py, px + pw, py + ph], w, h), category_id=1))
            person = len(boxes) - 1
        pb = boxes[person]['bbox']
        ow, oh = rng.uniform(0.12, 0.25) * w, rng.uniform(0.12, 0.25) * h
        side = rng.random() < 0.5
        ox = pb[2] - 0.2 * ow if side else pb[0] - 0.8 * ow
        oy = rng.uniform(pb[1], max(pb[1] + 1, pb[3] - oh))
        obox = _clip_box([ox, oy, ox + ow, oy + oh], w, h)
        boxes.append(dict(bbox=obox, category_id=int(meta.coco91_ids[obj_label])))
        obj = len(boxes) - 1
        for c in chosen:
            hoi = dict(subject_id=person, object_id=obj, category_id=int(meta.hoi_verb[c]) + 1)
            if train:
                hoi['hoi_category_id'] = c + 1
            hois.append(hoi)
            links.append((person, obj, int(meta.hoi_verb[c])))
        if not train and rng.random() < duplicate_prob:  # near-duplicate annotation
            jitter = lambda b: _clip_box(np.asarray(b) + rng.integers(-1, 2, 4), w, h)  # noqa
            boxes.append(dict(bbox=jitter(pb), category_id=1))
            boxes.append(dict(bbox=jitter(obox), category_id=boxes[obj]['category_id']))
            hois.append(dict(subject_id=len(boxes) - 2, object_id=len(boxes) - 1,
                             category_id=int(meta.hoi_verb[cls]) + 1))
    return dict(file_name=file_name, annotations=boxes, hoi_annotation=hois), (w, h), links


def _draw(entry: dict, size: Tuple[int, int], links, rng: np.random.Generator,
          obj_colours: np.ndarray, verb_colours: np.ndarray) -> np.ndarray:
    import cv2
    w, h = size
    img = (rng.normal(200, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    drawn = set()
    for box in entry['annotations'][:]:
        key = tuple(box['bbox']) + (box['category_id'],)
        if key in drawn:
            continue
        drawn.add(key)
        x1, y1, x2, y2 = box['bbox']
        if box['category_id'] == 1:
            head = max(2, (y2 - y1) // 5)
            cv2.rectangle(img, (x1, y1 + head), (x2, y2), (40, 40, 150), -1)
            cv2.circle(img, ((x1 + x2) // 2, y1 + head // 2), max(1, head // 2),
                       (140, 180, 230), -1)
        else:
            label = int(hico_meta().coco91_to_label(box['category_id']))
            colour = tuple(int(c) for c in obj_colours[label])
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
            cv2.rectangle(img, (x1, y1), (x2, y2), (20, 20, 20), 1)
    for k, (s, o, verb) in enumerate(sorted(set(links))):
        sb, ob = entry['annotations'][s]['bbox'], entry['annotations'][o]['bbox']
        off = 3 * (k % 3)
        p1 = ((sb[0] + sb[2]) // 2, (sb[1] + sb[3]) // 2 + off)
        p2 = ((ob[0] + ob[2]) // 2, (ob[1] + ob[3]) // 2 + off)
        cv2.line(img, p1, p2, tuple(int(c) for c in verb_colours[verb]), 2)
    return img


def make_hico_dataset(root: str, num_train: int = 8, num_test: int = 4,
                      hoi_classes: Union[None, int, Sequence] = None,
                      pairs_per_image: Tuple[int, int] = (1, 2),
                      img_size: Tuple[int, int] = (96, 128), multi_verb_prob: float = 0.3,
                      share_person_prob: float = 0.3, duplicate_prob: float = 0.0,
                      seed: int = 0, write_images: bool = True) -> Dict[str, object]:
    """Write a tiny HICO-DET dataset (images + JSON + ``corre_hico.npy``) under ``root``.

    Args:
        root: output folder (created); use it as ``data_root``.
        num_train / num_test: number of images of each split.
        hoi_classes: classes to draw from: None (8 default classes over 4 objects), a count
            (the defaults first), or a list of 1-based HOI ids / (verb, object) names.
        pairs_per_image: inclusive range of (person, object) pairs per image.
        img_size: inclusive range of image width and height.
        multi_verb_prob: chance that a pair gets a second verb of the same object (merged into
            one multi-hot pair in training).
        share_person_prob: chance that a pair reuses the previous person (one person, two
            objects).
        duplicate_prob: chance of adding a near-duplicate GT pair (boxes jittered by <= 1 px)
            in test images, as the real test set has.
        seed: random seed (deterministic output).
        write_images: write the JPEG files (False: annotations only).

    Returns:
        dict with ``root``, ``train_ann``, ``test_ann``, ``corre``, ``hoi_classes`` (0-based),
        ``num_train_pairs``, ``num_test_pairs``.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError(f'num_train and num_test must be >= 0, got {num_train}, {num_test}')
    lo, hi = pairs_per_image
    if not 1 <= lo <= hi:
        raise ValueError(f'pairs_per_image must be (lo, hi) with 1 <= lo <= hi, got '
                         f'{pairs_per_image}')
    if img_size[0] < 32 or img_size[1] < img_size[0]:
        raise ValueError(f'img_size must be (lo, hi) with 32 <= lo <= hi, got {img_size}')
    import cv2
    classes = _resolve_classes(hoi_classes)
    rng = np.random.default_rng(seed)
    obj_colours = _palette(80, seed=1)
    verb_colours = _palette(117, seed=2)
    ann_dir = osp.join(root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    out = dict(root=root, hoi_classes=classes)
    for split, num, prefix, ann in (('train2015', num_train, 'HICO_train2015', 'trainval_hico'),
                                    ('test2015', num_test, 'HICO_test2015', 'test_hico')):
        img_dir = osp.join(root, 'images', split)
        os.makedirs(img_dir, exist_ok=True)
        entries, n_pairs = [], 0
        for i in range(num):
            name = f'{prefix}_{i + 1:08d}.jpg'
            entry, size, links = _make_image_entry(
                rng, classes, name, img_size, pairs_per_image, multi_verb_prob,
                share_person_prob, duplicate_prob, train=split == 'train2015')
            entries.append(entry)
            n_pairs += len(entry['hoi_annotation'])
            if write_images:
                img = _draw(entry, size, links, rng, obj_colours, verb_colours)
                cv2.imwrite(osp.join(img_dir, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        path = osp.join(ann_dir, f'{ann}.json')
        with open(path, 'w') as f:
            json.dump(entries, f)
        key = 'train' if split == 'train2015' else 'test'
        out[f'{key}_ann'] = path
        out[f'num_{key}_pairs'] = n_pairs
    corre = osp.join(ann_dir, 'corre_hico.npy')
    np.save(corre, build_corre_matrix().astype(np.float64))
    out['corre'] = corre
    return out
