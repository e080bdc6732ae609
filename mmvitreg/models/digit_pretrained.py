"""Backbones pretrained on digit crops: the pretrained weights of the digit-scene benchmarks.

QPIC, like DETR, never trains its backbone from scratch: the paper starts from an
ImageNet-pretrained ResNet inside COCO-trained DETR weights. Through DETR's set loss alone a
backbone learns the object classes slowly (measured on digit HOI: a ResNet-18 trained from
scratch still classified objects at chance after 750 iterations), so the digit HOI preset starts
from pretrained weights too. No weights can be downloaded here, so they are made locally, once,
by a short deterministic pretraining: classify single handwritten digits (training glyphs only,
never the test split's) in crops composed like the scenes (:mod:`mmvitreg.datasets.digit_scenes`).

A config asks for them as for any checkpoint URL, e.g. in a backbone::

    init_cfg=dict(type='Pretrained', checkpoint='digits://resnet18-w32-s8', prefix='backbone.')

The digit HOI preset goes one step further, as QPIC does: QPIC starts its whole transformer from
a COCO-trained DETR, so the preset starts from a small DETR trained on the boxes of the preset's
training scenes (rings and digits; the interactions unused; no validation or test scene),
``digits://detr-r18-w32-s8-digit-hoi``, loaded with ``load_from`` like the converted DETR of
``configs/qpic/qpic_r50_8xb2-150e_hico.py``. Measured on digit HOI, from that start the seeds'
scores spread far less than from a transformer trained from scratch (README, digit HOI).

``digits://NAME`` names a recipe of :data:`DIGIT_PRETRAINED`: a ``backbone`` recipe (backbone,
crops, schedule) or a ``detector`` recipe (detector, digit HOI scenes, schedule). The
first use trains it (single-threaded, on a forked random stream, so the weights do not depend on
the caller's thread count or random state; about a minute on one core for a backbone, 5 for
the DETR) and caches the
checkpoint under ``$MMVITREG_CACHE`` (default ``~/.cache/mmvitreg``) as
``digits_pretrained/NAME-<recipe hash>.pth`` (the hash covers the recipes it starts from);
later uses, concurrent ones included, read that
file (with torch's weights-only loader).
"""
import copy
import fcntl
import hashlib
import json
import math
import os
import os.path as osp
import re
import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

__all__ = ['DIGIT_PRETRAINED', 'SCHEME', 'digit_pretrained_path', 'pretrain_on_digit_crops',
           'pretrain_detector_on_digit_hoi', 'load_digit_pretrained']

SCHEME = 'digits://'

# The small DETR of the digit HOI preset (configs/qpic/qpic_r18-w32_1xb16-25e_digit-hoi.py has the
# same backbone, neck, transformer and queries; a test checks that it loads every weight but the
# verb classifier). Losses and matching costs: mmdet's DETR.
_DETR_ATTN = dict(embed_dims=64, num_heads=4, dropout=0.0, batch_first=True)
_DETR_FFN = dict(embed_dims=64, feedforward_channels=128, num_fcs=2, ffn_drop=0.0,
                 act_cfg=dict(type='ReLU', inplace=True))
_DETR_R18_W32 = dict(
    type='DETR', num_queries=8,
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3,
                           bgr_to_rgb=True, pad_size_divisor=1),
    backbone=dict(type='ResNet', depth=18, base_channels=32, stem_channels=32, num_stages=2,
                  out_indices=(1, ), strides=(1, 2), dilations=(1, 1), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch',
                  init_cfg=dict(type='Pretrained', checkpoint='digits://resnet18-w32-s8',
                                prefix='backbone.')),
    neck=dict(type='ChannelMapper', in_channels=[64], kernel_size=1, out_channels=64,
              act_cfg=None, norm_cfg=None, num_outs=1),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=_DETR_ATTN, ffn_cfg=_DETR_FFN)),
    decoder=dict(num_layers=3, return_intermediate=True,
                 layer_cfg=dict(self_attn_cfg=_DETR_ATTN, cross_attn_cfg=_DETR_ATTN,
                                ffn_cfg=_DETR_FFN)),
    positional_encoding=dict(num_feats=32, normalize=True),
    bbox_head=dict(type='DETRHead', num_classes=11, embed_dims=64,
                   loss_cls=dict(type='CrossEntropyLoss', bg_cls_weight=0.1, use_sigmoid=False,
                                 loss_weight=1.0, class_weight=1.0),
                   loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                   loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
        dict(type='ClassificationCost', weight=1.0),
        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
        dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
    test_cfg=dict(max_per_img=100))

# name -> recipe.
# - ``backbone`` recipes: an mmdet/mmpretrain backbone config whose last output is pooled into a
#   linear 10-way classifier; crops are ``crop_size`` squares holding one digit of
#   ``digit_height`` pixels.
# - ``detector`` recipes: an mmdet detector config trained on the ``train`` split of the digit
#   HOI scenes ``data`` (DigitHOIDataset arguments) for ``epochs`` with AdamW, gradient clipping,
#   ``warmup_iters`` of linear warm-up and a cosine decay to 1 % (the presets' schedule).
DIGIT_PRETRAINED: Dict[str, dict] = {
    'resnet18-w32-s8': dict(
        backbone=dict(type='ResNet', depth=18, base_channels=32, stem_channels=32, num_stages=2,
                      out_indices=(1, ), strides=(1, 2), dilations=(1, 1), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                      style='pytorch'),
        scope='mmdet', crop_size=32, digit_height=(9, 28), num_crops=12000, iters=2400,
        batch_size=64, lr=2e-3, weight_decay=0.05, seed=0),
    'plainvit-t-p8': dict(
        backbone=dict(type='PlainViT',
                      arch=dict(embed_dims=128, num_layers=6, num_heads=4,
                                feedforward_channels=256, global_attn_indexes=(0, 1, 2, 3, 4, 5)),
                      img_size=64, patch_size=8, conv_stem=(32, 64, 128), pretrain_img_size=64,
                      window_size=0, use_rel_pos=False, drop_path_rate=0.1, out_indices=(-1, )),
        scope='mmdet', crop_size=32, digit_height=(9, 28), num_crops=6000, iters=800,
        batch_size=64, lr=2e-3, weight_decay=0.05, seed=0),
    # the training split of configs/_base_/datasets/digit_hoi.py (the same 2,000 scenes; no
    # validation or test scene is generated)
    'detr-r18-w32-s8-digit-hoi': dict(
        detector=_DETR_R18_W32, scope='mmdet',
        data=dict(num_train=2000, num_val=0, num_test=0, seed=0,
                  style=dict(digit_height=(14, 28))),
        epochs=20, batch_size=16, lr=1e-3, weight_decay=1e-4, max_grad_norm=1.0,
        warmup_iters=100, seed=0),
}
_VERSION = 1


def _recipe(name: str) -> dict:
    if name not in DIGIT_PRETRAINED:
        raise ValueError(f'unknown digit-pretrained checkpoint digits://{name}; known: '
                         f'{", ".join(SCHEME + k for k in sorted(DIGIT_PRETRAINED))}')
    return DIGIT_PRETRAINED[name]


def _cache_dir() -> str:
    root = os.environ.get('MMVITREG_CACHE') or osp.join(osp.expanduser('~'), '.cache',
                                                        'mmvitreg')
    return osp.join(root, 'digits_pretrained')


def digit_pretrained_path(name: str) -> str:
    """Where the checkpoint of recipe ``name`` is cached (the file name holds a hash of the
    recipe, so a changed recipe is trained anew)."""
    key = json.dumps(dict(_recipe(name), version=_VERSION), sort_keys=True)
    # a recipe starting from another digits:// recipe changes with it
    for other in sorted(set(re.findall(re.escape(SCHEME) + r'([\w.-]+)', key)) - {name}):
        key += osp.basename(digit_pretrained_path(other))
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return osp.join(_cache_dir(), f'{name}-{digest}.pth')


def _crops(recipe: dict) -> tuple:
    from mmvitreg.datasets.digit_scenes import SceneStyle, compose_scene
    size = recipe['crop_size']
    style = SceneStyle(image_size=(size, size), num_digits=(1, 1),
                       digit_height=tuple(recipe['digit_height']))
    images = np.zeros((recipe['num_crops'], size, size, 3), np.uint8)
    labels = np.zeros(recipe['num_crops'], np.int64)
    for i in range(recipe['num_crops']):
        image, objects = compose_scene(recipe['seed'] * 10**7 + i, style, 'train')
        images[i], labels[i] = image, objects[0][0]
    # RGB, as DetDataPreprocessor(bgr_to_rgb=True) gives the network mmcv's BGR images
    return torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(labels)


def pretrain_on_digit_crops(name: str) -> Dict[str, torch.Tensor]:
    """Train recipe ``name`` and return its backbone ``state_dict`` (keys prefixed
    ``backbone.``). Deterministic: one thread, a fixed seed, the caller's random state kept."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    recipe = _recipe(name)
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]), DefaultScope.overwrite_default_scope(
            recipe['scope']):
        torch.set_num_threads(1)
        try:
            torch.manual_seed(recipe['seed'])
            backbone = MODELS.build(copy.deepcopy(recipe['backbone']))
            backbone.init_weights()
            x, y = _crops(recipe)
            x = (x - 127.5) / 64.0  # the data preprocessor of the digit presets
            with torch.no_grad():
                channels = backbone(x[:2])[-1].shape[1]
            head = torch.nn.Linear(channels, 10)
            params = list(backbone.parameters()) + list(head.parameters())
            opt = torch.optim.AdamW(params, lr=recipe['lr'], weight_decay=recipe['weight_decay'])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe['lr'],
                                                        total_steps=recipe['iters'],
                                                        pct_start=0.1)
            gen = torch.Generator().manual_seed(recipe['seed'])
            backbone.train()
            start = time.time()
            for _ in range(recipe['iters']):
                idx = torch.randint(0, len(y), (recipe['batch_size'], ), generator=gen)
                logits = head(backbone(x[idx])[-1].mean((2, 3)))
                loss = F.cross_entropy(logits, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            backbone.eval()
            with torch.no_grad():
                acc = (head(backbone(x[:1000])[-1].mean((2, 3))).argmax(1) == y[:1000]).float()
            print_log(f'digits://{name}: pretrained {recipe["iters"]} iterations in '
                      f'{time.time() - start:.0f} s, training-crop accuracy '
                      f'{100 * acc.mean():.1f} %', logger='current')
        finally:
            torch.set_num_threads(threads)
    return {f'backbone.{k}': v for k, v in backbone.state_dict().items()}


def _warmup_cosine(warmup_iters: int, total_iters: int):
    """The presets' schedule as a factor of the learning rate: mmengine's ``LinearLR``
    (start_factor 0.01 over ``warmup_iters``) times ``CosineAnnealingLR`` to 1 % per iteration."""
    def factor(it: int) -> float:
        warm = min(1.0, 0.01 + 0.99 * it / max(warmup_iters, 1))
        return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * it / total_iters)))
    return factor


def pretrain_detector_on_digit_hoi(name: str) -> Dict[str, torch.Tensor]:
    """Train detector recipe ``name`` on the boxes of digit HOI scenes (its ``data``; the
    interactions are not used) and return the detector's ``state_dict``. Deterministic like
    :func:`pretrain_on_digit_crops`: one thread, a fixed seed, the caller's random state kept."""
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from mmvitreg.datasets.digit_hoi import DigitHOIDataset
    recipe = _recipe(name)
    threads = torch.get_num_threads()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]), DefaultScope.overwrite_default_scope(
            recipe['scope']):
        torch.set_num_threads(1)
        try:
            np.random.seed(recipe['seed'])
            torch.manual_seed(recipe['seed'])
            model = MODELS.build(copy.deepcopy(recipe['detector']))  # builders edit configs
            model.init_weights()
            data = DigitHOIDataset(
                split='train', data_root=osp.join(_cache_dir(), f'{name}-data'),
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadHOIAnnotations'),
                          dict(type='PackHOIInputs')], **recipe['data'])
            batch_size, epochs = recipe['batch_size'], recipe['epochs']
            per_epoch = len(data) // batch_size  # full batches, as the presets' loader
            opt = torch.optim.AdamW(model.parameters(), lr=recipe['lr'],
                                    weight_decay=recipe['weight_decay'])
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, _warmup_cosine(recipe['warmup_iters'], epochs * per_epoch))
            gen = torch.Generator().manual_seed(recipe['seed'])
            model.train()
            start = time.time()
            for epoch in range(epochs):
                order = torch.randperm(len(data), generator=gen).tolist()
                total = 0.0
                for i in range(per_epoch):
                    batch = pseudo_collate(
                        [data[j] for j in order[i * batch_size:(i + 1) * batch_size]])
                    batch = model.data_preprocessor(batch, True)
                    loss, _ = model.parse_losses(model(**batch, mode='loss'))
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe['max_grad_norm'])
                    opt.step()
                    sched.step()
                    total += loss.item()
                print_log(f'digits://{name}: epoch {epoch + 1}/{epochs}, mean loss '
                          f'{total / per_epoch:.3f} ({time.time() - start:.0f} s)',
                          logger='current')
        finally:
            torch.set_num_threads(threads)
            np.random.set_state(np_state)
    return model.state_dict()


def load_digit_pretrained(filename: str, map_location: Optional[str] = None) -> dict:
    """mmengine checkpoint loader of ``digits://NAME``: the cached checkpoint, trained first if
    missing (under a file lock: concurrent runs wait for one trainer)."""
    name = filename[len(SCHEME):]
    path = digit_pretrained_path(name)
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path + '.lock', 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not osp.isfile(path):
                    train = (pretrain_detector_on_digit_hoi if 'detector' in _recipe(name)
                             else pretrain_on_digit_crops)
                    state = train(name)
                    tmp = path + '.tmp'
                    torch.save(dict(state_dict=state, meta=dict(recipe=name)), tmp)
                    os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return torch.load(path, map_location=map_location, weights_only=True)


CheckpointLoader.register_scheme(prefixes=SCHEME, loader=load_digit_pretrained, force=True)
