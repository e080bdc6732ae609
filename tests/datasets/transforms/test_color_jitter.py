"""TorchvisionColorJitter: torchvision's ColorJitter on PIL images, on mmcv's BGR uint8 arrays."""
import itertools
from collections import Counter

import numpy as np
import pytest
import torchvision.transforms.functional as F
from mmengine.registry import DefaultScope
from PIL import Image

from mmvitreg.datasets.transforms import TorchvisionColorJitter
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


@pytest.mark.parametrize('channel_order', ['bgr', 'rgb'])
def test_fixed_factors_match_torchvision_on_pil(channel_order):
    jitter = TorchvisionColorJitter(channel_order=channel_order)
    for img in images():
        rgb = np.ascontiguousarray(img[..., ::-1])
        src = img if channel_order == 'bgr' else rgb
        before = src.copy()
        cases = [[(name, f)] for name in ('brightness', 'contrast', 'saturation')
                 for f in (0.0, 0.6, 0.83, 1.0, 1.17, 1.4, 2.5)]
        cases += [list(zip(order, (0.6, 1.4, 0.77)))
                  for order in itertools.permutations(('brightness', 'contrast', 'saturation'))]
        for params in cases:
            out = jitter.apply(src, params).astype(int)
            if channel_order == 'bgr':
                out = out[..., ::-1]
            diff = np.abs(out - torchvision_ops(rgb, params))
            assert diff.max() <= 1, (params, diff.max())  # in practice identical
        np.testing.assert_array_equal(src, before)  # the input is not modified


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
