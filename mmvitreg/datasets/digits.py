"""scikit-learn's bundled handwritten digits as an mmpretrain dataset (no download needed).

1,797 grayscale 8x8 images of the digits 0-9 (UCI optdigits test set, shipped inside
scikit-learn). They are upsampled (bilinear) to ``img_size`` and replicated to 3 channels so that
stock ViT pipelines apply. The split is fixed and stratified-by-construction: every 5th image
(360) is the test split, the other 1,437 the training split.
"""
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset

from mmvitreg.registry import DATASETS

DIGIT_CLASSES = tuple(str(i) for i in range(10))


def load_digits_images(img_size: int = 32) -> tuple:
    """Return ``(images uint8 [N, S, S, 3], labels int64 [N])`` of sklearn's digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError("DigitsDataset needs scikit-learn: pip install 'mmvitreg[demo]'") from exc
    import torch
    import torch.nn.functional as F

    digits = load_digits()
    raw = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # N,1,8,8 in [0,1]
    if img_size != 8:
        raw = F.interpolate(raw, size=(img_size, img_size), mode='bilinear', align_corners=False)
    imgs = (raw.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    imgs = np.repeat(imgs[..., None], 3, axis=-1)
    return imgs, digits.target.astype(np.int64)


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """Handwritten digits (sklearn) for from-scratch small-data training.

    Args:
        split: ``'train'`` (1,437 images) or ``'test'`` (360 images).
        img_size: side of the upsampled square image.
        num_samples: optional cap on the number of images (first ones of the split), for tests.
    """

    METAINFO = {'classes': DIGIT_CLASSES}

    def __init__(self, split: str = 'train', img_size: int = 32,
                 num_samples: Optional[int] = None, **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(f"DigitsDataset split must be 'train' or 'test', got {split!r}")
        if img_size < 8:
            raise ValueError(f'DigitsDataset img_size must be >= 8, got {img_size}')
        self.split = split
        self.img_size = img_size
        self.num_samples = num_samples
        kwargs.setdefault('test_mode', split == 'test')
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        imgs, labels = load_digits_images(self.img_size)
        is_test = (np.arange(len(labels)) % 5) == 0
        keep = is_test if self.split == 'test' else ~is_test
        idx = np.flatnonzero(keep)
        if self.num_samples is not None:
            idx = idx[:self.num_samples]
        return [dict(img=imgs[i], gt_label=int(labels[i])) for i in idx]
