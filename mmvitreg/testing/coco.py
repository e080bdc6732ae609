"""Generate tiny COCO-format detection datasets (real on-disk layout, no download).

The layout is the one stock mmdet configs expect, so a config only needs ``data_root``::

    <root>/train2017/*.jpg   <root>/val2017/*.jpg
    <root>/annotations/instances_train2017.json   <root>/annotations/instances_val2017.json

Each image shows a few filled rectangles on a noisy background; the rectangle colour encodes the
class, so a detector can actually learn the task. Every object carries a box, an area and a
rectangle polygon as segmentation (usable by Mask R-CNN configs).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

# The 80 COCO categories with their ids in COCO's 91-id space.
COCO_CATEGORY_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)


def coco_class_names() -> Tuple[str, ...]:
    from mmdet.datasets import CocoDataset
    return tuple(CocoDataset.METAINFO['classes'])


def class_color(label: int) -> Tuple[int, int, int]:
    """A distinct, deterministic RGB colour per contiguous class index."""
    rng = np.random.RandomState(1000 + label)
    return tuple(int(c) for c in rng.randint(40, 256, size=3))


def _random_objects(rng: np.random.RandomState, width: int, height: int, labels: Sequence[int],
                    max_objects: int) -> List[Tuple[int, List[float]]]:
    objects = []
    for _ in range(rng.randint(1, max_objects + 1)):
        w = rng.randint(max(4, width // 6), max(5, width // 2))
        h = rng.randint(max(4, height // 6), max(5, height // 2))
        x1 = rng.randint(0, width - w)
        y1 = rng.randint(0, height - h)
        objects.append((int(rng.choice(labels)), [float(x1), float(y1), float(x1 + w),
                                                  float(y1 + h)]))
    return objects


def draw_image(rng: np.random.RandomState, width: int, height: int,
               objects: Sequence[Tuple[int, Sequence[float]]]) -> Image.Image:
    noise = rng.randint(0, 60, size=(height, width, 3)).astype(np.uint8)
    img = Image.fromarray(noise)
    draw = ImageDraw.Draw(img)
    for label, (x1, y1, x2, y2) in objects:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=class_color(label))
    return img


def make_coco_dataset(root: str,
                      num_train: int = 8,
                      num_val: int = 4,
                      image_size: Tuple[int, int] = (96, 128),
                      classes: Optional[Sequence[int]] = None,
                      max_objects: int = 3,
                      seed: int = 0) -> Dict[str, str]:
    """Write a tiny COCO dataset under ``root`` and return its paths.

    Args:
        image_size: (height, width) of every image.
        classes: contiguous class indices (0..79) to draw objects from (default: 0..4).
        max_objects: objects per image are uniform in [1, max_objects].
    """
    rng = np.random.RandomState(seed)
    labels = list(classes) if classes is not None else list(range(5))
    if any(not 0 <= c < 80 for c in labels):
        raise ValueError(f'COCO class indices must be in [0, 80), got {labels}')
    names = coco_class_names()
    height, width = image_size
    categories = [dict(id=cid, name=names[i], supercategory='none')
                  for i, cid in enumerate(COCO_CATEGORY_IDS)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    paths = dict(data_root=root)
    ann_id = 1
    for split, num in (('train2017', num_train), ('val2017', num_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img_id = len(images) + 1 + (0 if split == 'train2017' else 100000)
            file_name = f'{img_id:012d}.jpg'
            objects = _random_objects(rng, width, height, labels, max_objects)
            draw_image(rng, width, height, objects).save(osp.join(root, split, file_name),
                                                         quality=95)
            images.append(dict(id=img_id, file_name=file_name, width=width, height=height))
            for label, (x1, y1, x2, y2) in objects:
                w, h = x2 - x1, y2 - y1
                annotations.append(dict(
                    id=ann_id, image_id=img_id, category_id=COCO_CATEGORY_IDS[label],
                    bbox=[x1, y1, w, h], area=w * h, iscrowd=0,
                    segmentation=[[x1, y1, x2, y1, x2, y2, x1, y2]]))
                ann_id += 1
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        paths[split] = ann_file
    return paths
