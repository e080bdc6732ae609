"""TorchvisionColorJitter: torchvision's ColorJitter on PIL images, on mmcv's BGR uint8 arrays."""
import itertools
from collections import Counter

import cv2
import numpy as np
import pytest
import torchvision.transforms.functional as F
from mmengine.registry import DefaultScope
from PIL import Image

from mmvitreg.datasets.transforms import TorchvisionColorJitter
from mmvitreg.datasets.transforms.color_jitter import (adjust_brightness, adjust_contrast,
                                                       adjust_saturation, fast_grey, pil_grey)
from mmvitreg.registry import TRANSFORMS

PIL_OPS = dict(brightness=F.adjust_brightness, contrast=F.adjust_contrast,
               saturation=F.adjust_saturation, hue=F.adjust_hue)


def images():
    """A natural-looking image (smooth gradients, flat colours, edges) and uniform noise, BGR."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    smooth = np.stack([xx * 2, yy * 2.5, (xx + yy) * 1.2], -1).clip(0, 255).astype(np.uint8)
    smooth[20:50, 30:70] = (30, 200, 90)  # flat patch
    smooth[60:80, 10:40] = (250, 250, 245)  # near-white patch (clipping)
    noise = rng.integers(0, 256, (61, 77, 3), dtype=np.uint8)
    return [smooth, noise]


def torchvision_ops(img_rgb: np.ndarray, params) -> np.ndarray:
    out = Image.fromarray(img_rgb)
    for name, factor in params:
        out = PIL_OPS[name](out, factor)
    return np.asarray(out).astype(int)


def photo_like(seed=0, h=120, w=160):
    """Smooth colour fields + noise, JPEG-like content as in benchmarks/bench_pipeline.py."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 40, w // 40, 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-25, 26, (h, w, 3), dtype=np.int16)
    return img.clip(0, 255).astype(np.uint8)


ORDERS = list(itertools.permutations(('brightness', 'contrast', 'saturation')))


@pytest.mark.parametrize('channel_order', ['bgr', 'rgb'])
def test_fixed_factors_match_torchvision_on_pil(channel_order):
    """Every operation alone within one level of torchvision's: the fast paths (|1 - f| <= 0.9)
    and the exact ones (0, 2.5); and each step of a composed jitter, given torchvision's output
    of the steps before it."""
    jitter = TorchvisionColorJitter(channel_order=channel_order)
    for img in images() + [photo_like()]:
        rgb = np.ascontiguousarray(img[..., ::-1])
        src = img if channel_order == 'bgr' else rgb
        before = src.copy()
        cases = [[(name, f)] for name in ('brightness', 'contrast', 'saturation')
                 for f in (0.0, 0.1, 0.6, 0.83, 1.0, 1.17, 1.4, 1.9, 2.5)]
        cases += [list(zip(order, (0.6, 1.4, 0.77))) for order in ORDERS]
        for params in cases:
            for step in range(len(params)):
                ref_in = torchvision_ops(rgb, params[:step]).astype(np.uint8)
                step_in = ref_in if channel_order == 'rgb' else ref_in[..., ::-1]
                out = jitter.apply(np.ascontiguousarray(step_in), params[step:step + 1])
                if channel_order == 'bgr':
                    out = out[..., ::-1]
                diff = np.abs(out.astype(int) - torchvision_ops(ref_in, params[step:step + 1]))
                assert diff.max() <= 1, (params, step, diff.max())
        np.testing.assert_array_equal(src, before)  # the input is not modified


def test_composed_jitter_stays_close_to_torchvision():
    """Composed, a one-level difference grows with later factors > 1: for the fixed factors of
    the test above within 2 levels; over ColorJitter(.4, .4, .4) draws within 3 levels (2 on
    most draws, 3 on ~1.5% in a 400-draw measurement) on ~0.02% of the pixels."""
    jitter = TorchvisionColorJitter(0.4, 0.4, 0.4)
    imgs = images() + [photo_like(seed) for seed in range(3)]
    for img in imgs:
        rgb = np.ascontiguousarray(img[..., ::-1])
        for order in ORDERS:
            params = list(zip(order, (0.6, 1.4, 0.77)))
            out = jitter.apply(img, params)[..., ::-1].astype(int)
            assert np.abs(out - torchvision_ops(rgb, params)).max() <= 2, params
    np.random.seed(0)
    worst, differing = 0, []
    for k in range(120):
        img = imgs[k % len(imgs)]
        params = jitter._random_params()
        ref = torchvision_ops(np.ascontiguousarray(img[..., ::-1]), params)
        diff = np.abs(jitter.apply(img, params)[..., ::-1].astype(int) - ref)
        worst = max(worst, diff.max())
        differing.append(np.mean(diff > 0))
    assert worst <= 3 and np.mean(differing) < 1e-3, (worst, np.mean(differing))


def test_composed_tables_equal_the_steps_one_by_one():
    """The pending-table composition (contrast then brightness in one pass) changes nothing."""
    img = photo_like(1)
    jitter = TorchvisionColorJitter()
    funcs = dict(brightness=adjust_brightness, contrast=adjust_contrast,
                 saturation=adjust_saturation)
    for order in ORDERS:
        params = list(zip(order, (1.3, 0.7, 1.2)))
        ref = img
        for name, factor in params:
            ref = funcs[name](ref, factor)
        np.testing.assert_array_equal(jitter.apply(img, params), ref)


def test_fast_grey_is_pil_grey_within_one_level():
    img = photo_like(2)
    diff = np.abs(fast_grey(img).astype(int) - pil_grey(img).astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_hue_is_close_to_torchvision():
    jitter = TorchvisionColorJitter()
    img = images()[0]
    rgb = np.ascontiguousarray(img[..., ::-1])
    for factor in (-0.5, -0.1, 0.05, 0.1, 0.5):
        out = jitter.apply(img, [('hue', factor)])[..., ::-1].astype(int)
        diff = np.abs(out - torchvision_ops(rgb, [('hue', factor)]))
        # OpenCV's HSV round trip, not PIL's: mostly within 2 levels, some pixels further off
        assert diff.mean() < 1.5 and np.mean(diff <= 2) > 0.85 and diff.max() <= 16, \
            (factor, diff.mean(), diff.max())


@pytest.mark.parametrize('shape', [(40, 50), (40, 50, 1)])
def test_grey_images(shape):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    jitter = TorchvisionColorJitter()
    params = [('saturation', 1.4), ('brightness', 1.3), ('hue', 0.2), ('contrast', 0.7)]
    out = jitter.apply(img, params)
    assert out.shape == img.shape and out.dtype == np.uint8
    ref = torchvision_ops(img.reshape(40, 50), params)  # PIL 'L' image
    assert np.abs(out.reshape(40, 50).astype(int) - ref).max() <= 1


def test_ranges_follow_torchvision():
    t = TorchvisionColorJitter(brightness=0.4, contrast=1.5, saturation=(0.2, 3.0), hue=0.1)
    assert t.ranges == dict(brightness=(0.6, 1.4), contrast=(0.0, 2.5), saturation=(0.2, 3.0),
                            hue=(-0.1, 0.1))
    t = TorchvisionColorJitter(brightness=0, contrast=(1, 1), saturation=0.4)
    assert t.ranges['brightness'] is None and t.ranges['contrast'] is None
    assert t.ranges['hue'] is None
    assert 'TorchvisionColorJitter(brightness=None' in repr(t)


def test_distribution_orders_and_factors():
    np.random.seed(0)
    t = TorchvisionColorJitter(0.4, 0.4, 0.4)
    draws = [t._random_params() for _ in range(3000)]
    orders = Counter(tuple(name for name, _ in d) for d in draws)
    assert len(orders) == 6 and all(350 < n < 650 for n in orders.values()), orders  # 500 each
    for name in ('brightness', 'contrast', 'saturation'):
        f = np.array([dict(d)[name] for d in draws])
        assert f.min() >= 0.6 and f.max() <= 1.4
        assert abs(f.mean() - 1.0) < 0.02 and abs(f.std() - 0.8 / 12 ** 0.5) < 0.01  # uniform
        assert abs(np.mean(f < 0.8) - 0.25) < 0.03
    t = TorchvisionColorJitter(0.4, 0.4, 0.4, hue=0.1)
    draws = [t._random_params() for _ in range(4800)]
    orders = Counter(tuple(name for name, _ in d) for d in draws)
    assert len(orders) == 24 and min(orders.values()) > 120, orders  # 200 each
    hue = np.array([dict(d)['hue'] for d in draws])
    assert -0.1 <= hue.min() and hue.max() <= 0.1 and abs(hue.mean()) < 0.005


def test_transform_applies_its_draw_and_is_registered():
    img = images()[0]
    with DefaultScope.overwrite_default_scope('mmdet'):
        t = TRANSFORMS.build(dict(type='TorchvisionColorJitter', brightness=0.4, contrast=0.4,
                                  saturation=0.4))
    np.random.seed(3)
    params = t._random_params()
    np.random.seed(3)
    out = t(dict(img=img))['img']
    np.testing.assert_array_equal(out, t.apply(img, params))
    assert not np.array_equal(out, img)
    assert TorchvisionColorJitter()(dict(img=img))['img'] is not img  # no-op still copies


@pytest.mark.parametrize('kwargs, match', [
    (dict(brightness=-0.1), 'brightness must be non-negative'),
    (dict(contrast=(1.5, 1.0)), r'contrast range must satisfy 0.0 <= min <= max'),
    (dict(saturation='0.4'), 'saturation must be a number or a \\(min, max\\) pair'),
    (dict(saturation=True), 'saturation must be a number'),
    (dict(hue=0.6), 'hue range must satisfy -0.5 <= min <= max <= 0.5'),
    (dict(hue=(0.1, 0.2, 0.3)), 'hue must be a number or a \\(min, max\\) pair'),
    (dict(channel_order='hsv'), "channel_order must be 'bgr' or 'rgb'"),
])
def test_bad_arguments_are_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        TorchvisionColorJitter(**kwargs)
    assert '\n' not in str(info.value)


def test_bad_images_are_one_line_value_errors():
    t = TorchvisionColorJitter(brightness=0.4)
    for img in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8)):
        with pytest.raises(ValueError, match='needs a uint8 .* image, got') as info:
            t(dict(img=img))
        assert '\n' not in str(info.value)


@pytest.mark.parametrize('view', [
    lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1], lambda a: a[:, ::2],
    lambda a: a[::-1, :, 0], lambda a: a[:, ::-1, :1]])
def test_strided_views_as_their_copies(view):
    """mmcv's RandomFlip hands over reversed views; other strides work as well."""
    img = view(photo_like(3))
    before = img.copy()
    params = [('contrast', 1.3), ('saturation', 0.7), ('brightness', 1.2)]
    out = TorchvisionColorJitter().apply(img, params)
    assert out.flags.c_contiguous and out.shape == img.shape
    np.testing.assert_array_equal(out, TorchvisionColorJitter().apply(before, params))
    np.testing.assert_array_equal(img, before)
