"""Digit scenes: a detection data set composed from scikit-learn's handwritten digits.

Every image is a canvas on which several real handwritten digits (the 1,797 8x8 glyphs of
scikit-learn's bundled UCI digits; no download) are drawn at different scales (small ones
included), aspect ratios, positions and colours, over a colour-gradient background with pixel
noise and unannotated clutter strokes; digits may partly overlap (the later one is drawn on top).
Boxes are the tight boxes of each glyph's ink at the drawn size (alpha >= ``INK_THRESHOLD``), so a
box is exactly what is visible of the digit, not its 8x8 cell.

Splits never share a glyph: test scenes draw from the glyphs of :class:`DigitsDataset`'s test split
(every 5th image), validation scenes from every 5th of the rest, training scenes from the others,
so a detector is tested on handwriting it never saw.

Composition is a pure function of a seed (:func:`compose_scene`); :func:`make_digit_scenes` writes
the COCO layout of mmdet's ``CocoDataset`` (``annotations/instances_{train,val,test}.json`` and PNG
images under ``{train,val,test}/``), and :class:`DigitScenesDataset` generates it on first use into
its ``data_root`` (a cache folder; concurrent runs wait for one writer).
"""
import fcntl
import json
import os
import os.path as osp
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['SceneStyle', 'GLYPH_SPLITS', 'INK_THRESHOLD', 'DIGIT_NAMES', 'glyph_pool',
           'render_glyph', 'ink_box', 'background', 'add_clutter', 'paint', 'compose_scene',
           'make_digit_scenes', 'prepare_cached', 'DigitScenesDataset']

GLYPH_SPLITS = ('train', 'val', 'test')
INK_THRESHOLD = 0.3
DIGIT_NAMES = tuple(str(i) for i in range(10))
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class SceneStyle:
    """How scenes look. Sizes are in pixels of the canvas.

    Args:
        image_size: (height, width) of every canvas.
        num_digits: inclusive range of annotated digits per scene.
        digit_height: inclusive range of a digit's drawn height (its 8x8 cell scaled).
        aspect: range of width / height of the drawn cell.
        max_covered: largest fraction of a digit's box that later digits may cover.
        clutter: inclusive range of unannotated strokes per scene.
        noise_std: standard deviation of the Gaussian pixel noise (0-255 scale).
        min_contrast: smallest brightness difference (grey levels, every channel) between a
            digit's colour and the mean background under it (digits are lighter).
    """
    image_size: Tuple[int, int] = (64, 64)
    num_digits: Tuple[int, int] = (2, 5)
    digit_height: Tuple[int, int] = (9, 26)
    aspect: Tuple[float, float] = (0.75, 1.25)
    max_covered: float = 0.25
    clutter: Tuple[int, int] = (1, 4)
    noise_std: float = 10.0
    min_contrast: float = 70.0

    def __post_init__(self):
        h, w = self.image_size
        lo, hi = self.digit_height
        _check_range('num_digits', self.num_digits, 1)
        _check_range('digit_height', self.digit_height, 4)
        _check_range('clutter', self.clutter, 0)
        if hi > min(h, w):
            raise ValueError(f'SceneStyle digit_height {self.digit_height} does not fit the '
                             f'image_size {self.image_size}')
        if not 0 < self.aspect[0] <= self.aspect[1]:
            raise ValueError(f'SceneStyle aspect must be (lo, hi) with 0 < lo <= hi, got '
                             f'{self.aspect}')
        if not 0 <= self.max_covered < 1:
            raise ValueError(f'SceneStyle max_covered must be in [0, 1), got {self.max_covered}')


def _check_range(name: str, value: Sequence[int], minimum: int) -> None:
    if (len(value) != 2 or not all(isinstance(v, (int, np.integer)) for v in value)
            or not minimum <= value[0] <= value[1]):
        raise ValueError(f'SceneStyle {name} must be (lo, hi) integers with {minimum} <= lo <= '
                         f'hi, got {value}')


_POOLS: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}


def glyph_pool(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(glyphs float32 (N, 8, 8) in [0, 1], labels int64 (N,))`` of one glyph split.

    ``test``: every 5th of scikit-learn's digits (the test split of :class:`DigitsDataset`, 360);
    ``val``: every 5th of the remaining ones (288); ``train``: the other 1,149.
    """
    if split not in GLYPH_SPLITS:
        raise ValueError(f'glyph split must be one of {GLYPH_SPLITS}, got {split!r}')
    if split not in _POOLS:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - environment dependent
            raise ImportError("digit scenes need scikit-learn: pip install 'mmvitreg[demo]'") \
                from exc
        digits = load_digits()
        index = np.arange(len(digits.target))
        test = index % 5 == 0
        rest = np.flatnonzero(~test)
        val = np.zeros_like(test)
        val[rest[::5]] = True
        masks = dict(test=test, val=val, train=~test & ~val)
        glyphs = (digits.images / 16.0).astype(np.float32)
        for name, mask in masks.items():
            _POOLS[name] = (glyphs[mask], digits.target[mask].astype(np.int64))
    return _POOLS[split]


def render_glyph(glyph: np.ndarray, height: int, width: int) -> np.ndarray:
    """An 8x8 glyph scaled to ``(height, width)`` (bilinear), as an alpha map in [0, 1]."""
    import cv2
    return np.clip(cv2.resize(glyph, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)


def ink_box(alpha: np.ndarray, threshold: float = INK_THRESHOLD) -> Optional[Tuple[int, ...]]:
    """Tight ``(x1, y1, x2, y2)`` box (exclusive ends) of the pixels with alpha >= threshold."""
    rows = np.flatnonzero((alpha >= threshold).any(1))
    cols = np.flatnonzero((alpha >= threshold).any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear gradient between two random dark colours (every channel in [0, 110]) along a
    random direction, float32 HxWx3."""
    c0, c1 = rng.uniform(0, 110, 3), rng.uniform(0, 110, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / max(width - 1, 1) + np.sin(angle) * yy / max(height - 1, 1))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)


def contrasting_colour(rng: np.random.Generator, under: np.ndarray,
                       min_contrast: float) -> np.ndarray:
    """A colour lighter than the mean of ``under`` by ``min_contrast`` to ``min_contrast + 80``
    grey levels in every channel, with a hue shift of at most 30 per channel (chalk on a dark
    board: the digit's shape is in its brightness, whatever the colours)."""
    mean = under.reshape(-1, 3).mean(0)
    delta = rng.uniform(min_contrast, min_contrast + 80)
    return np.clip(mean + delta + rng.uniform(-30, 30, 3), 0, 255).astype(np.float32)


def paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a solid colour through ``alpha`` onto ``canvas`` at ``(x, y)`` (in place)."""
    h, w = alpha.shape
    region = canvas[y:y + h, x:x + w]
    a = alpha[:region.shape[0], :region.shape[1], None]
    region *= 1 - a
    region += a * colour


def add_clutter(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Draw ``count`` unannotated strokes (lines and arcs, 1-2 px) in random colours."""
    import cv2
    h, w = canvas.shape[:2]
    for _ in range(count):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thickness = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(canvas, p1, p2, colour, thickness, lineType=cv2.LINE_AA)
        else:
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(3, max(4, w // 4))), int(rng.integers(3, max(4, h // 4))))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(60, 200)), colour, thickness,
                        lineType=cv2.LINE_AA)


def covered_fraction(box: Sequence[float], others: Sequence[Sequence[float]]) -> float:
    """Largest fraction of ``box``'s area that one of ``others`` covers."""
    x1, y1, x2, y2 = box
    area = max((x2 - x1) * (y2 - y1), 1e-9)
    best = 0.0
    for ox1, oy1, ox2, oy2 in others:
        iw = min(x2, ox2) - max(x1, ox1)
        ih = min(y2, oy2) - max(y1, oy1)
        if iw > 0 and ih > 0:
            best = max(best, iw * ih / area)
    return best


@dataclass
class Placed:
    """One drawn digit: its class, tight ink box ``(x1, y1, x2, y2)`` and drawing data."""
    label: int
    box: Tuple[int, int, int, int]
    alpha: np.ndarray = field(repr=False)
    origin: Tuple[int, int] = (0, 0)


def place_digit(rng: np.random.Generator, style: SceneStyle, glyph: np.ndarray, label: int,
                placed: Sequence[Placed], height: Optional[int] = None,
                position: Optional[Tuple[int, int]] = None,
                tries: int = 30) -> Optional[Placed]:
    """Size and position one glyph so that no box (its own or an earlier one) is covered by more
    than ``style.max_covered``; ``None`` when no position fits within ``tries``."""
    img_h, img_w = style.image_size
    lo, hi = style.digit_height
    for _ in range(tries):
        h = int(height if height is not None else rng.integers(lo, hi + 1))
        w = max(4, int(round(h * rng.uniform(*style.aspect))))
        w = min(w, img_w)
        alpha = render_glyph(glyph, h, w)
        box = ink_box(alpha)
        if box is None:
            return None
        if position is None:
            x = int(rng.integers(0, img_w - w + 1))
            y = int(rng.integers(0, img_h - h + 1))
        else:
            x = int(np.clip(position[0], 0, img_w - w))
            y = int(np.clip(position[1], 0, img_h - h))
        abs_box = (x + box[0], y + box[1], x + box[2], y + box[3])
        boxes = [p.box for p in placed]
        if covered_fraction(abs_box, boxes) > style.max_covered or any(
                covered_fraction(b, [abs_box]) > style.max_covered for b in boxes):
            if position is not None:
                return None
            continue
        return Placed(label, abs_box, alpha, (x, y))
    return None


def compose_scene(seed: int, style: SceneStyle = SceneStyle(),
                  split: str = 'train') -> Tuple[np.ndarray, List[Tuple[int, Tuple[int, ...]]]]:
    """One detection scene, a pure function of ``(seed, style, split)``.

    Returns:
        ``(image uint8 HxWx3 RGB, [(label 0..9, (x1, y1, x2, y2)), ...])`` with exclusive box ends
        in pixels.
    """
    rng = np.random.default_rng(seed)
    glyphs, labels = glyph_pool(split)
    h, w = style.image_size
    canvas = background(rng, h, w)
    add_clutter(rng, canvas, int(rng.integers(style.clutter[0], style.clutter[1] + 1)))
    placed: List[Placed] = []
    for _ in range(int(rng.integers(style.num_digits[0], style.num_digits[1] + 1))):
        k = int(rng.integers(len(labels)))
        digit = place_digit(rng, style, glyphs[k], int(labels[k]), placed)
        if digit is not None:
            placed.append(digit)
    draw_placed(rng, canvas, placed, style)
    return finish(rng, canvas, style), [(p.label, p.box) for p in placed]


def draw_placed(rng: np.random.Generator, canvas: np.ndarray, placed: Sequence[Placed],
                style: SceneStyle) -> None:
    """Paint digits in order (later on top), each in a colour contrasting with what is under it."""
    for p in placed:
        x, y = p.origin
        h, w = p.alpha.shape
        colour = contrasting_colour(rng, canvas[y:y + h, x:x + w], style.min_contrast)
        paint(canvas, p.alpha, colour, x, y)


def finish(rng: np.random.Generator, canvas: np.ndarray, style: SceneStyle) -> np.ndarray:
    """Add pixel noise and quantise to uint8."""
    if style.noise_std > 0:
        canvas = canvas + rng.normal(0, style.noise_std, canvas.shape).astype(np.float32)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- files
@contextmanager
def _exclusive(path: str) -> Iterator[None]:
    os.makedirs(osp.dirname(osp.abspath(path)) or '.', exist_ok=True)
    with open(path, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2
    if not cv2.imwrite(path, np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f'could not write {path}')


def prepare_cached(root: str, params: dict, writer) -> str:
    """Run ``writer(tmp_root)`` once per ``params`` and publish the result at ``root``.

    The folder holds ``PARAMS.json``; when it matches ``params`` nothing is done. Otherwise the
    data are written into a temporary sibling folder and moved into place, under a file lock, so
    concurrent runs (benchmark jobs, DDP ranks) wait for one writer and never read half a data
    set. A folder written with other parameters is replaced.
    """
    root = osp.abspath(root)
    stamp = osp.join(root, 'PARAMS.json')
    want = json.dumps(params, sort_keys=True)

    def current() -> Optional[str]:
        if not osp.isfile(stamp):
            return None
        with open(stamp) as f:
            return json.dumps(json.load(f), sort_keys=True)

    if current() == want:
        return root
    with _exclusive(root.rstrip('/') + '.lock'):
        if current() == want:
            return root
        tmp = root.rstrip('/') + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        writer(tmp)
        with open(osp.join(tmp, 'PARAMS.json'), 'w') as f:
            json.dump(params, f, indent=1, sort_keys=True)
        if osp.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    return root


def _split_seed(seed: int, split: str, index: int) -> int:
    return int(np.random.SeedSequence([seed, GLYPH_SPLITS.index(split), index]).generate_state(
        1, np.uint64)[0])


def make_digit_scenes(root: str, num_train: int = 2000, num_val: int = 250, num_test: int = 500,
                      seed: int = 0, style: Optional[dict] = None) -> Dict[str, str]:
    """Write digit scenes in mmdet's COCO layout under ``root`` (no caching; see
    :class:`DigitScenesDataset` for the cached version).

    Layout: ``{train,val,test}/<id>.png`` and ``annotations/instances_{train,val,test}.json``
    with categories ``'0'``..``'9'`` (ids 1..10). Scene ``i`` of a split is
    ``compose_scene(seed_of(seed, split, i), style, split)``: adding images to a split never
    changes the existing ones.
    """
    scene_style = SceneStyle(**_style_dict(style))
    counts = dict(train=num_train, val=num_val, test=num_test)
    for split, num in counts.items():
        if not isinstance(num, (int, np.integer)) or num < 0:
            raise ValueError(f'make_digit_scenes num_{split} must be an integer >= 0, got {num!r}')
    categories = [dict(id=i + 1, name=name, supercategory='digit')
                  for i, name in enumerate(DIGIT_NAMES)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    paths = dict(data_root=root)
    ann_id = 1
    for split, num in counts.items():
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            image, objects = compose_scene(_split_seed(seed, split, i), scene_style, split)
            file_name = f'{i:06d}.png'
            _write_png(osp.join(root, split, file_name), image)
            img_id = i + 1
            images.append(dict(id=img_id, file_name=file_name, height=image.shape[0],
                               width=image.shape[1]))
            for label, (x1, y1, x2, y2) in objects:
                w, h = x2 - x1, y2 - y1
                annotations.append(dict(id=ann_id, image_id=img_id, category_id=label + 1,
                                        bbox=[x1, y1, w, h], area=w * h, iscrowd=0))
                ann_id += 1
        path = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(path, 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        paths[split] = path
    return paths


def _style_dict(style: Optional[dict]) -> dict:
    style = dict(style or {})
    known = set(SceneStyle.__dataclass_fields__)
    bad = sorted(set(style) - known)
    if bad:
        raise ValueError(f'unknown scene style key(s) {bad}; known: {sorted(known)}')
    return {k: tuple(v) if isinstance(v, list) else v for k, v in style.items()}


def _register_dataset():
    from mmdet.datasets import CocoDataset

    from mmvitreg.registry import DATASETS

    @DATASETS.register_module()
    class DigitScenesDataset(CocoDataset):
        """mmdet ``CocoDataset`` over digit scenes, generated on first use into ``data_root``.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'`` (sets ``ann_file`` and the image folder).
            num_train, num_val, num_test, seed, style: see :func:`make_digit_scenes`; the folder
                is regenerated when they change.
            Everything else goes to ``CocoDataset`` (``data_root``, ``pipeline``, ...).
        """

        METAINFO = dict(CocoDataset.METAINFO, classes=DIGIT_NAMES,
                        palette=[tuple(int(c) for c in np.random.default_rng(i).integers(
                            40, 256, 3)) for i in range(10)])

        def __init__(self, split: str = 'train', num_train: int = 2000, num_val: int = 250,
                     num_test: int = 500, seed: int = 0, style: Optional[dict] = None,
                     data_root: str = 'data/digit_scenes/', **kwargs):
            if split not in GLYPH_SPLITS:
                raise ValueError(f'DigitScenesDataset split must be one of {GLYPH_SPLITS}, '
                                 f'got {split!r}')
            params = dict(kind='detection', version=_FORMAT_VERSION, num_train=num_train,
                          num_val=num_val, num_test=num_test, seed=seed,
                          style=asdict(SceneStyle(**_style_dict(style))))
            prepare_cached(data_root, params, lambda tmp: make_digit_scenes(
                tmp, num_train, num_val, num_test, seed, style))
            kwargs.setdefault('ann_file', f'annotations/instances_{split}.json')
            kwargs.setdefault('data_prefix', dict(img=f'{split}/'))
            kwargs.setdefault('test_mode', split != 'train')
            super().__init__(data_root=data_root, **kwargs)

    return DigitScenesDataset


DigitScenesDataset = _register_dataset()
