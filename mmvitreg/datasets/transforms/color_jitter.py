"""Colour jitter with torchvision's distribution, vectorised with OpenCV on uint8 arrays.

torchvision's ``T.ColorJitter(brightness, contrast, saturation, hue)`` (the one QPIC/DETR-style
pipelines use, on PIL images) draws a random order of its four operations (``torch.randperm(4)``)
and one factor per enabled operation, uniformly in ``[max(0, 1 - x), 1 + x]`` (hue in
``[-x, x]``), and applies them with PIL's ``ImageEnhance``:

* brightness ``f``: ``blend(black, img, f)``, i.e. ``trunc(f * v)`` clipped to ``[0, 255]``;
* contrast ``f``: ``blend(mean, img, f)`` about the mean of the image's ``L`` (grey) conversion,
  rounded to an integer (``int(mean + 0.5)``);
* saturation ``f``: ``blend(grey, img, f)`` with the per-pixel ``L`` image;
* hue ``h``: HSV round trip, ``H += uint8(int(h * 255))`` modulo 256.

PIL's ``blend`` computes ``in1 + f * (in2 - in1)`` in float32 and truncates to uint8 after
clipping. Brightness and contrast are per-value maps, applied here as exact 256-entry look-up
tables (``cv2.LUT``, one pass per image; a contrast directly followed by a brightness is one
composed table); saturation is one ``cv2.addWeighted`` with the grey image, hue an HSV round trip
in OpenCV's full-range (0..255) hue. Its cost against torchvision's on PIL images is measured
by ``benchmarks/bench_pipeline.py`` (README: Benchmarks).

Where we differ from torchvision + PIL (at most one intensity level per operation, given the
same input):

* the grey image (saturation, contrast mean) is OpenCV's fixed-point ``cvtColor`` grey,
  ``(19596 R + 38470 G + 7470 B + 2**15) >> 16``, not PIL's ``(19595 R + 38470 G + 7471 B +
  2**15) >> 16``: one level apart on 0.13% of the 2**24 colours, and faster than an exact grey.
  A grey one level off moves a saturation blend by ``|1 - f|`` before truncation; the contrast
  mean moves by at most one level (in practice by ~1e-4), moving a contrast blend by
  ``|1 - f|``. With ``|1 - f| <= 0.9`` (every factor of ``ColorJitter(x <= 0.9)``) the output
  stays within one level; outside that range the exact grey (float ``cv2.transform``, ties
  rounded to even instead of up) and PIL's float blend are used, at a higher cost;
* the saturation blend ``f * v + (1 - f) * grey`` is computed in float32 by ``cv2.addWeighted``,
  which rounds; a bias of ``-0.5 + 1e-4`` turns that into PIL's truncation except for blends
  within 1e-4 below an integer (one level up);
* composed, a one-level difference is amplified by later brightness/contrast factors > 1, as
  any difference would be: for ``ColorJitter(.4, .4, .4)`` draws ~0.02% of the pixels differ,
  by at most 2 levels on most draws and 3 on ~1.5% of them (tests/.../test_color_jitter.py);
* hue goes through OpenCV's HSV conversion, not PIL's: several levels apart on some pixels
  (mostly dark or unsaturated ones, where hue is ill-defined); QPIC/DETR use no hue jitter;
* randomness comes from numpy's global RNG (as mmcv/mmdet transforms, e.g. ``RandomFlip``,
  ``RandomCrop``, so ``randomness=dict(seed=...)`` seeds it), not torch's.
"""
from numbers import Number
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from mmvitreg.registry import TRANSFORMS

__all__ = ['TorchvisionColorJitter', 'pil_grey', 'fast_grey', 'adjust_brightness',
           'adjust_contrast', 'adjust_saturation', 'adjust_hue']

Range = Union[float, Sequence[float]]
OPS = ('brightness', 'contrast', 'saturation', 'hue')
# PIL's RGB -> L weights (19595, 38470, 7471) / 65536, as a BGR row for cv2.transform
_GREY_BGR = np.array([[7471, 38470, 19595]], dtype=np.float32) / 65536
_VALUES = np.arange(256, dtype=np.float32)
# Largest |1 - factor| for which the fast grey keeps a blend within one level of PIL's
_FAST_MAX_DEVIATION = 0.9
# Added before cv2.addWeighted's rounding so that it truncates as PIL does (see module docstring)
_TRUNCATE_BIAS = -0.5 + 1e-4


def _blend_lut(base: float, factor: float) -> np.ndarray:
    """PIL ``blend(base, v, factor)`` for every uint8 ``v``: float32, clipped, truncated."""
    out = np.float32(base) + np.float32(factor) * (_VALUES - np.float32(base))
    return np.clip(out, 0, 255).astype(np.uint8)


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or not (
            img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        desc = (f'{img.dtype} array of shape {img.shape}' if isinstance(img, np.ndarray)
                else type(img).__name__)
        raise ValueError(f'TorchvisionColorJitter needs a uint8 (H, W), (H, W, 1) or (H, W, 3) '
                         f'image, got {desc}')


def _is_colour(img: np.ndarray) -> bool:
    return img.ndim == 3 and img.shape[2] == 3


def _contiguous_copy(img: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a strided view, fast for flipped images.

    OpenCV's Python bindings copy a non-contiguous array at every call, and numpy copies one
    with reversed pixels (``mmcv.imflip``'s ``np.flip`` view) element by element, which is slow.
    A reversed view of a contiguous array is flipped back by ``cv2.flip`` instead, one
    vectorised pass.
    """
    flipped = [axis for axis in (0, 1) if img.strides[axis] < 0]
    base = np.flip(img, flipped) if flipped else img
    if flipped and base.flags.c_contiguous:
        return cv2.flip(base, {(0,): 0, (1,): 1, (0, 1): -1}[tuple(flipped)])
    return np.ascontiguousarray(img)


def _fast(factor: float) -> bool:
    return abs(1.0 - factor) <= _FAST_MAX_DEVIATION


def _apply_lut(img: np.ndarray, lut: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    return cv2.LUT(img, lut, dst=out)


def brightness_lut(factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Brightness`` as a 256-entry table (exact)."""
    return _blend_lut(0.0, factor)


def adjust_brightness(img: np.ndarray, factor: float,
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """PIL ``ImageEnhance.Brightness(img).enhance(factor)`` (exact) on a uint8 array."""
    return _apply_lut(img, brightness_lut(factor), out)


def pil_grey(img: np.ndarray, channel_order: str = 'bgr') -> np.ndarray:
    """PIL's ``convert('L')`` of a colour uint8 image: ``(19595 R + 38470 G + 7471 B) / 65536``
    rounded (exact but for exact halves, which round to even here); slower than ``fast_grey``."""
    return cv2.transform(img, _GREY_BGR if channel_order == 'bgr' else _GREY_BGR[:, ::-1])


def fast_grey(img: np.ndarray, channel_order: str = 'bgr') -> np.ndarray:
    """OpenCV's fixed-point grey: PIL's ``convert('L')`` within one level (differs on 0.13% of
    the colours, by one)."""
    code = cv2.COLOR_BGR2GRAY if channel_order == 'bgr' else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(img, code)


def contrast_lut(img: np.ndarray, factor: float, channel_order: str = 'bgr') -> np.ndarray:
    """PIL ``ImageEnhance.Contrast`` of ``img`` as a 256-entry table: blend with the mean grey.

    The mean is the one of the rounded grey image (the weighted channel means can be several
    hundredths off on images with flat colours, enough to move ``int(mean + 0.5)``): of
    ``fast_grey`` when ``|1 - factor| <= 0.9`` (within one level of PIL's output), else of PIL's
    exact grey.
    """
    if _is_colour(img):
        img = (fast_grey if _fast(factor) else pil_grey)(img, channel_order)
    mean = cv2.mean(img)[0]
    return _blend_lut(int(mean + 0.5), factor)


def adjust_contrast(img: np.ndarray, factor: float, channel_order: str = 'bgr',
                    out: Optional[np.ndarray] = None) -> np.ndarray:
    """PIL ``ImageEnhance.Contrast`` (see ``contrast_lut``) on a uint8 array."""
    return _apply_lut(img, contrast_lut(img, factor, channel_order), out)


def adjust_saturation(img: np.ndarray, factor: float, channel_order: str = 'bgr',
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """PIL ``ImageEnhance.Color``: blend with the per-pixel grey image (identity on grey).

    With ``|1 - factor| <= 0.9``: one ``cv2.addWeighted`` of the image and ``fast_grey`` in
    float32, rounded with a bias that emulates truncation (within one level of PIL). Otherwise
    as PIL: ``grey + f * (v - grey)`` with PIL's grey in float32, clipped and truncated.
    ``out`` may be ``img`` (in place) or None (new array), as for the other functions.
    """
    if not _is_colour(img):
        return img.copy() if out is None else out
    if _fast(factor):
        grey = cv2.cvtColor(fast_grey(img, channel_order), cv2.COLOR_GRAY2BGR)
        return cv2.addWeighted(img, factor, grey, 1.0 - factor, _TRUNCATE_BIAS, dst=out)
    grey = cv2.cvtColor(pil_grey(img, channel_order), cv2.COLOR_GRAY2BGR)
    blend = cv2.subtract(img, grey, dtype=cv2.CV_32F)
    blend *= np.float32(factor)
    blend += grey
    np.clip(blend, 0, 255, out=blend)
    if out is None:
        return blend.astype(np.uint8)
    np.copyto(out, blend, casting='unsafe')  # float -> uint8 truncates, as PIL
    return out


def adjust_hue(img: np.ndarray, factor: float, channel_order: str = 'bgr',
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """torchvision's PIL ``adjust_hue``: shift the 0..255 hue by ``int(factor * 255)``."""
    if not _is_colour(img):
        return img.copy() if out is None else out
    to_hsv, from_hsv = ((cv2.COLOR_BGR2HSV_FULL, cv2.COLOR_HSV2BGR_FULL) if channel_order == 'bgr'
                        else (cv2.COLOR_RGB2HSV_FULL, cv2.COLOR_HSV2RGB_FULL))
    hsv = cv2.cvtColor(img, to_hsv)
    shift = np.int32(factor * 255).astype(np.uint8)
    hsv[..., 0] += shift  # wraps modulo 256 as torchvision's uint8 addition
    return cv2.cvtColor(hsv, from_hsv, dst=out)


def _parse_range(name: str, value: Range) -> Optional[Tuple[float, float]]:
    """torchvision's ``ColorJitter._check_input``: a number ``x`` or a ``(min, max)`` pair."""
    center, bound, clip = (0.0, (-0.5, 0.5), False) if name == 'hue' else \
        (1.0, (0.0, float('inf')), True)
    if isinstance(value, Number) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f'TorchvisionColorJitter {name} must be non-negative, got {value}')
        lo, hi = center - float(value), center + float(value)
        if clip:
            lo = max(lo, 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, Number) and not isinstance(v, bool) for v in value):
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f'TorchvisionColorJitter {name} must be a number or a (min, max) pair, '
                         f'got {value!r}')
    if not bound[0] <= lo <= hi <= bound[1]:
        raise ValueError(f'TorchvisionColorJitter {name} range must satisfy {bound[0]} <= min '
                         f'<= max <= {bound[1]}, got ({lo}, {hi})')
    return None if lo == hi == center else (lo, hi)


@TRANSFORMS.register_module()
class TorchvisionColorJitter(BaseTransform):
    """torchvision's ``ColorJitter`` (as applied to PIL images) on mmcv's uint8 arrays.

    Same distribution as torchvision: the enabled operations in a uniformly random order, each
    factor uniform in its range (``x`` -> ``[max(0, 1 - x), 1 + x]``, hue ``x`` -> ``[-x, x]``;
    a ``(min, max)`` pair is used as given; ``0`` disables an operation). Same operations as PIL
    up to one intensity level (see the module docstring; bit-exact but for hue in the tests).
    Its cost against torchvision's is measured by ``benchmarks/bench_pipeline.py``.
    The input image is not modified.

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        brightness / contrast / saturation: jitter amount ``x`` >= 0 or a ``(min, max)`` factor
            range with ``0 <= min <= max``.
        hue: ``x`` in ``[0, 0.5]`` or a ``(min, max)`` range within ``[-0.5, 0.5]``.
        channel_order: ``'bgr'`` (mmcv's ``LoadImageFromFile``) or ``'rgb'``.
    """

    def __init__(self, brightness: Range = 0.0, contrast: Range = 0.0,
                 saturation: Range = 0.0, hue: Range = 0.0, channel_order: str = 'bgr') -> None:
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"TorchvisionColorJitter channel_order must be 'bgr' or 'rgb', "
                             f'got {channel_order!r}')
        self.channel_order = channel_order
        self.ranges: Dict[str, Optional[Tuple[float, float]]] = {
            name: _parse_range(name, value)
            for name, value in zip(OPS, (brightness, contrast, saturation, hue))}

    @cache_randomness
    def _random_params(self) -> List[Tuple[str, float]]:
        """(operation, factor) in application order, as ``ColorJitter.get_params`` draws them."""
        order = np.random.permutation(len(OPS))
        factors = {name: float(np.random.uniform(*rng))
                   for name, rng in self.ranges.items() if rng is not None}
        return [(OPS[i], factors[OPS[i]]) for i in order if OPS[i] in factors]

    def apply(self, img: np.ndarray, params: Sequence[Tuple[str, float]]) -> np.ndarray:
        """Apply ``params`` ((operation, factor) in order) to a copy of ``img``.

        Brightness and contrast tables are kept pending and composed (a table of a table, exact)
        until a step has to read the image: a contrast followed by a brightness is one pass.
        The first pass writes a new array, the later ones work on it in place.
        """
        _check_image(img)
        # a strided view (mmcv's imflip returns a reversed one) is copied once, then worked on
        out = None if img.flags.c_contiguous else _contiguous_copy(img)
        lut: Optional[np.ndarray] = None  # pending table, not applied yet
        for name, factor in params:
            if name in ('saturation', 'hue') and not _is_colour(img):
                continue  # identity on grey images, as in PIL/torchvision
            if name == 'brightness':
                step = brightness_lut(factor)
                lut = step if lut is None else step[lut]
                continue
            if lut is not None:  # contrast (its mean), saturation and hue read the image
                out = _apply_lut(img if out is None else out, lut, out)
                lut = None
            src = img if out is None else out
            if name == 'contrast':
                lut = contrast_lut(src, factor, self.channel_order)
            elif name == 'saturation':
                out = adjust_saturation(src, factor, self.channel_order, out=out)
            else:
                out = adjust_hue(src, factor, self.channel_order, out=out)
        if lut is not None:
            out = _apply_lut(img if out is None else out, lut, out)
        if out is None:
            return img.copy()
        return out.reshape(img.shape)

    def transform(self, results: dict) -> dict:
        results['img'] = self.apply(results['img'], self._random_params())
        return results

    def __repr__(self) -> str:
        ranges = ', '.join(f'{k}={v}' for k, v in self.ranges.items())
        return f'{self.__class__.__name__}({ranges}, channel_order={self.channel_order!r})'
