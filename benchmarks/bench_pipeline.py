#!/usr/bin/env python
"""Per-sample CPU time of the shipped training pipelines against their official anchors.

Each row times one pipeline (a shipped config's ``train_dataloader``) and its anchor in the same
process, on the same generated JPEGs (480-640 px, written to a temp folder with COCO and HICO-DET
annotation files in the real formats), interleaved over ``--repeats`` rounds; the ratio is the
median of the per-round ratios. Anchors:

* HICO-DET/QPIC and DETR COCO: mmdet's DETR training pipeline (``mmdet::detr/detr_r50_8xb2-150e``),
  through the data sets' ``__getitem__`` (annotation parsing is done once at start, as in training);
* DeiT / DHVT / DRLoc classification: timm's ``create_transform`` with the official recipe
  (``rand-m9-mstd0.5-inc1``, bicubic, RandomErasing 0.25 pixel mode; CIFAR at 32 px with
  ``RandomCrop(32, padding=4)`` as DHVT; CIFAR upsampled to 224 as DRLoc) on PIL images;
* colour jitter: torchvision's ``ColorJitter(.4, .4, .4)`` on PIL images (QPIC's), every other
  image flipped as by ``RandomFlip``.

``workers/GPU`` is how many dataloader processes per GPU keep up with ``--step-time`` seconds per
iteration at the config's batch per GPU (``ceil(ms/sample * batch / step)``), assuming one core
per worker as fast as this one. Times are this process's CPU time per sample, single-threaded
(OpenCV and torch at one thread, as in dataloader workers), the cases interleaved sample by
sample, so other load on the machine affects the ratios little; the ratios are what carries over
to other machines.

    OMP_NUM_THREADS=1 python benchmarks/bench_pipeline.py            # ~5 min on 2 loaded cores
    OMP_NUM_THREADS=1 python benchmarks/bench_pipeline.py --quick    # ~1 min
"""
import argparse
import contextlib
import io
import json
import math
import os
import os.path as osp
import random
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmvitreg  # noqa: E402,F401
from mmvitreg.testing import make_hico_dataset  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COLUMNS = ('pipeline', 'config', 'ms/sample', 'anchor', 'anchor ms', 'ratio', 'ratio range',
           'batch/GPU', 'workers/GPU', 'config workers')
DETR_ANCHOR = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
TIMM_RECIPE = dict(is_training=True, color_jitter=0.4, auto_augment='rand-m9-mstd0.5-inc1',
                   interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)


def textured_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Photo-like BGR content (smooth colour fields + noise) so JPEG decoding costs as usual."""
    base = rng.integers(0, 256, (max(h // 40, 2), max(w // 40, 2), 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-25, 26, (h, w, 3), dtype=np.int16)
    return img.clip(0, 255).astype(np.uint8)


def make_data(root: str, num_images: int, size: Sequence[int], seed: int = 0) -> Dict:
    """HICO-DET release layout + a COCO ``instances`` file over the same JPEGs + CIFAR arrays."""
    info = make_hico_dataset(osp.join(root, 'hico'), num_train=num_images, num_test=0,
                             img_size=tuple(size), seed=seed)
    rng = np.random.default_rng(seed)
    img_dir = osp.join(info['root'], 'images', 'train2015')
    entries = json.load(open(info['train_ann']))
    images, annotations, paths = [], [], []
    for i, entry in enumerate(entries):
        path = osp.join(img_dir, entry['file_name'])
        h, w = cv2.imread(path).shape[:2]
        img = textured_image(rng, h, w)
        for ann in entry['annotations']:  # keep the objects visible
            x1, y1, x2, y2 = ann['bbox']
            img[y1:y2, x1:x2] = (img[y1:y2, x1:x2] // 2 + 60)
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
        images.append(dict(id=i + 1, file_name=entry['file_name'], width=w, height=h))
        for ann in entry['annotations']:
            x1, y1, x2, y2 = ann['bbox']
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                    category_id=ann['category_id'], iscrowd=0,
                                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1)))
    from mmdet.datasets import CocoDataset
    categories = [dict(id=i, name=n) for i, n in zip(_coco_ids(), CocoDataset.METAINFO['classes'])]
    coco_ann = osp.join(root, 'instances_train.json')
    with open(coco_ann, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    cifar = [textured_image(rng, 32, 32) for _ in range(num_images)]
    return dict(hico_root=info['root'], coco_ann=coco_ann, img_dir=img_dir, paths=paths,
                cifar=cifar)


def _coco_ids() -> List[int]:
    from mmvitreg.testing.coco import COCO_CATEGORY_IDS
    return list(COCO_CATEGORY_IDS)


def _load_cfg(path: str):
    from mmengine.config import Config
    if path.startswith('mmdet::'):
        import mmdet
        path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', path[len('mmdet::'):])
        return Config.fromfile(path)
    return Config.fromfile(osp.join(ROOT, path))


def det_case(config: str, data: Dict) -> Callable[[int], object]:
    """``dataset[i]`` of the config's training set, pointed at the generated data."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    cfg = _load_cfg(config).train_dataloader.dataset
    if cfg.type == 'HICODetDataset':
        cfg.update(data_root=data['hico_root'], ann_file='annotations/trainval_hico.json')
    else:
        cfg.update(data_root='', ann_file=data['coco_ann'], data_prefix=dict(img=data['img_dir']))
    cfg.filter_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'), \
            contextlib.redirect_stdout(io.StringIO()):  # pycocotools' loading chatter
        ds = DATASETS.build(cfg)
    return lambda i: ds[i % len(ds)]


def cls_case(config: str, data: Dict) -> Callable[[int], object]:
    """The config's training pipeline on an ImageNet-style ``img_path`` or a CIFAR array."""
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    cfg = _load_cfg(config).train_dataloader.dataset
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose(cfg.pipeline)
    if 'CIFAR' in cfg.type:
        return lambda i: pipeline(dict(img=data['cifar'][i % len(data['cifar'])].copy(),
                                       gt_label=0))
    return lambda i: pipeline(dict(img_path=data['paths'][i % len(data['paths'])], gt_label=0))


def _clamp_timm_posterize() -> None:
    """timm's increasing Posterize can ask for 0 bits, which recent Pillow (13) rejects: keep
    >= 1."""
    from timm.data import auto_augment as aa
    orig = aa.posterize
    if getattr(orig, 'clamped', False):
        return

    def posterize(img, bits_to_keep, **kwargs):
        return orig(img, max(bits_to_keep, 1), **kwargs)

    posterize.clamped = True
    for name, op in list(aa.NAME_TO_OP.items()):
        if op is orig:
            aa.NAME_TO_OP[name] = posterize
    aa.posterize = posterize


def timm_case(data: Dict, size: int, cifar: bool,
              cifar_crop: bool = False) -> Callable[[int], object]:
    """timm ``create_transform`` with the official recipe on PIL images (as their loaders)."""
    from PIL import Image
    from timm.data import create_transform
    from torchvision import transforms as T
    _clamp_timm_posterize()
    tf = create_transform(size, **TIMM_RECIPE)
    if cifar_crop:
        tf.transforms[0] = T.RandomCrop(32, padding=4)
    if cifar:
        return lambda i: tf(Image.fromarray(data['cifar'][i % len(data['cifar'])]))
    return lambda i: tf(Image.open(data['paths'][i % len(data['paths'])]).convert('RGB'))


def jitter_cases(data: Dict) -> Dict[str, Callable[[int], object]]:
    """Colour jitters on decoded images: ours and mmpretrain's on BGR arrays, torchvision's on PIL.

    Every other image is flipped as the pipelines' ``RandomFlip(prob=0.5)`` before the jitter
    hands it over: mmcv's reversed numpy view, a flipped PIL image for torchvision.
    """
    import mmcv
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import TRANSFORMS as CLS_TRANSFORMS
    from PIL import Image
    from torchvision import transforms as T

    from mmvitreg.datasets.transforms import TorchvisionColorJitter
    bgr = [cv2.imread(p) for p in data['paths']]
    pil = [Image.fromarray(np.ascontiguousarray(b[..., ::-1])) for b in bgr]
    bgr = [mmcv.imflip(b) if i % 2 else b for i, b in enumerate(bgr)]
    pil = [p.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else p for i, p in enumerate(pil)]
    ours = TorchvisionColorJitter(0.4, 0.4, 0.4)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        mmpre = CLS_TRANSFORMS.build(dict(type='ColorJitter', brightness=0.4, contrast=0.4,
                                          saturation=0.4, backend='cv2'))
    tv = T.ColorJitter(0.4, 0.4, 0.4)
    n = len(bgr)
    return {'ours': lambda i: ours(dict(img=bgr[i % n])),
            'mmpretrain': lambda i: mmpre(dict(img=bgr[i % n])),
            'torchvision': lambda i: tv(pil[i % n])}


# (pipeline, config or None, candidate case key, anchor name, anchor case key)
ROWS = (
    ('colour jitter (TorchvisionColorJitter)', None, 'jitter:ours',
     'torchvision ColorJitter(.4,.4,.4), PIL', 'jitter:torchvision'),
    ("colour jitter (mmpretrain ColorJitter, cv2; was HICO's)", None, 'jitter:mmpretrain',
     'torchvision ColorJitter(.4,.4,.4), PIL', 'jitter:torchvision'),
    ('HICO-DET / QPIC', 'configs/qpic/qpic_r50_8xb2-150e_hico.py', 'hico',
     "mmdet DETR (COCO) pipeline", 'detr'),
    ('DETR COCO (= anchor; noise floor)', 'configs/dropkey/detr_r50_8xb2-150e_coco.py', 'detr_cfg',
     "mmdet DETR (COCO) pipeline", 'detr'),
    ('DeiT-S IN-1k', 'configs/dropkey/deit-small_dropkey_4xb256_in1k.py', 'deit',
     'timm create_transform (DeiT recipe)', 'timm224'),
    ('DHVT-S IN-1k', 'configs/dhvt/dhvt-small-p16_2xb128-300e_in1k.py', 'dhvt_in',
     'timm create_transform (DeiT recipe)', 'timm224'),
    ('DHVT-T CIFAR-100 (32 px)', 'configs/dhvt/dhvt-tiny-p4_2xb256-300e_cifar100.py', 'dhvt_cifar',
     'timm create_transform 32 px + RandomCrop(32, 4)', 'timm_cifar32'),
    ('DRLoc DeiT-S CIFAR-100 (224 px)',
     'configs/drloc/deit-small_drloc_8xb128-100e_cifar100-224px.py', 'drloc',
     'timm create_transform 224 px (CIFAR upsampled)', 'timm_cifar224'),
)


def build_cases(data: Dict, rows: Sequence[tuple]) -> Dict[str, Callable[[int], object]]:
    needed = {key for row in rows for key in (row[2], row[4])}
    cases: Dict[str, Callable[[int], object]] = {}
    if any(k.startswith('jitter:') for k in needed):
        cases.update({f'jitter:{k}': v for k, v in jitter_cases(data).items()})
    by_key = {row[2]: row[1] for row in rows}
    for key in sorted(needed - set(cases)):
        if key == 'detr':
            cases[key] = det_case(DETR_ANCHOR, data)
        elif key == 'timm224':
            cases[key] = timm_case(data, 224, cifar=False)
        elif key == 'timm_cifar32':
            cases[key] = timm_case(data, 32, cifar=True, cifar_crop=True)
        elif key == 'timm_cifar224':
            cases[key] = timm_case(data, 224, cifar=True)
        elif key in ('hico', 'detr_cfg'):
            cases[key] = det_case(by_key[key], data)
        else:
            cases[key] = cls_case(by_key[key], data)
    return cases


def measure(cases: Dict[str, Callable[[int], object]], samples: int,
            repeats: int) -> Dict[str, List[float]]:
    """CPU seconds per sample of every case, one value per round.

    Cases are interleaved sample by sample (the order rotating), and timed with this process's
    CPU clock: on a shared machine other processes then inflate neither side of a ratio.
    """
    times: Dict[str, List[float]] = {k: [] for k in cases}
    for case in cases.values():  # warm-up (imports, caches, lazy init)
        case(0)
    keys = list(cases)
    for rep in range(repeats):
        total = dict.fromkeys(keys, 0.0)
        for i in range(samples):
            shift = (rep * samples + i) % len(keys)  # no case always runs first
            for key in keys[shift:] + keys[:shift]:
                start = time.process_time()
                cases[key](i)
                total[key] += time.process_time() - start
        for key in keys:
            times[key].append(total[key] / samples)
    return times


def make_table(rows: Sequence[tuple], times: Dict[str, List[float]],
               step_time: float) -> List[Dict[str, str]]:
    table = []
    for name, config, key, anchor_name, anchor_key in rows:
        ratios = [c / a for c, a in zip(times[key], times[anchor_key])]
        sample = statistics.median(times[key])
        batch = workers = '-'
        if config is not None:
            dl = _load_cfg(config).train_dataloader
            batch = dl.batch_size
            workers = dl.get('num_workers', 0)
        need = '-' if batch == '-' else str(math.ceil(sample * batch / step_time))
        table.append({
            'pipeline': name, 'config': config or '-',
            'ms/sample': f'{sample * 1e3:.1f}', 'anchor': anchor_name,
            'anchor ms': f'{statistics.median(times[anchor_key]) * 1e3:.1f}',
            'ratio': f'{statistics.median(ratios):.2f}',
            'ratio range': f'{min(ratios):.2f}-{max(ratios):.2f}',
            'batch/GPU': str(batch), 'workers/GPU': need, 'config workers': str(workers)})
    return table


def format_table(table: List[Dict[str, str]]) -> str:
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(row[c] for c in COLUMNS) + ' |' for row in table]
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=16, help='generated JPEGs (and CIFAR)')
    parser.add_argument('--samples', type=int, default=None,
                        help='samples per case and round (default: --images)')
    parser.add_argument('--repeats', type=int, default=7, help='interleaved rounds')
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640),
                        help='inclusive range of image width and height')
    parser.add_argument('--step-time', type=float, default=0.25,
                        help='GPU step time (s/iter) the loaders must feed')
    parser.add_argument('--only', nargs='+', default=None,
                        help='rows whose pipeline name contains one of these words')
    parser.add_argument('--quick', action='store_true', help='8 images, 3 rounds')
    parser.add_argument('--work-dir', default=None, help='where to write the data (temp dir)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = min(args.images, 8), min(args.repeats, 3)
    if args.images < 1 or args.repeats < 1:
        parser.error('--images and --repeats must be >= 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    args = parse_args(argv)
    cv2.setNumThreads(0)  # as mmengine's runner (env_cfg.mp_cfg.opencv_num_threads=0)
    torch.set_num_threads(1)  # one core per dataloader worker
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rows = [r for r in ROWS
            if not args.only or any(w.lower() in r[0].lower() for w in args.only)]
    with tempfile.TemporaryDirectory(dir=args.work_dir) as root:
        data = make_data(root, args.images, args.size, args.seed)
        cases = build_cases(data, rows)
        times = measure(cases, args.samples or args.images, args.repeats)
    table = make_table(rows, times, args.step_time)
    print(f'{args.images} generated images of {args.size[0]}-{args.size[1]} px, '
          f'{args.repeats} interleaved rounds, CPU ms per sample, '
          f'step time {args.step_time} s/iter, '
          f'{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}')
    print(format_table(table))
    return table


if __name__ == '__main__':
    main()
