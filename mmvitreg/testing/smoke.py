"""Run a real config for a few iterations on tiny generated data (config smoke tests).

``smoke_train`` keeps the config's model, optimizer and hooks and replaces only what a CPU test
cannot afford: the dataset (tiny generated data in the real on-disk format), the schedule (a few
iterations, no validation), pretrained-weight downloads and large image scales.
"""
import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

from mmengine.config import Config, ConfigDict

_RESIZE_TYPES = ('Resize', 'RandomResize', 'RandomChoiceResize', 'FixScaleResize')


def _strip_pretrained(node: Any) -> Any:
    """Drop ``init_cfg=dict(type='Pretrained')`` and ``pretrained=`` entries (no downloads)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
                continue
            if key == 'init_cfg' and isinstance(value, list):
                value = [v for v in value
                         if not (isinstance(v, dict) and v.get('type') == 'Pretrained')] or None
            if key == 'pretrained' and isinstance(value, str):
                continue
            out[key] = _strip_pretrained(value)
        return type(node)(out) if isinstance(node, ConfigDict) else out
    if isinstance(node, (list, tuple)):
        return type(node)(_strip_pretrained(v) for v in node)
    return node


def _find_transforms(pipeline: Any) -> List[dict]:
    found = []
    if isinstance(pipeline, dict):
        if 'type' in pipeline:
            found.append(pipeline)
        for value in pipeline.values():
            if isinstance(value, (list, tuple, dict)):
                found += _find_transforms(value)
    elif isinstance(pipeline, (list, tuple)):
        for item in pipeline:
            found += _find_transforms(item)
    return found


def infer_cls_img_size(cfg: Config, default: Optional[int] = 224) -> Optional[int]:
    """Input side length of a classification config, read from its test/train pipelines."""
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        loader = cfg.get(key) or {}
        transforms = _find_transforms((loader.get('dataset') or {}).get('pipeline', []))
        for field in ('crop_size', 'scale'):  # a crop is what the model sees, not the resize
            for t in transforms:
                value = t.get(field)
                if isinstance(value, int):
                    return value
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
                    return int(value[0])
    return default


def _det_pipeline(with_mask: bool, img_scale: Tuple[int, int]) -> List[dict]:
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='Resize', scale=img_scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]


def _config_uses_masks(cfg: Config) -> bool:
    loader = cfg.get('train_dataloader') or {}
    return any(t.get('type') == 'LoadAnnotations' and t.get('with_mask')
               for t in _find_transforms(loader))


def shrink_config(cfg: Config, work_dir: str, task: str = 'cls', max_iters: int = 1,
                  batch_size: int = 2, img_scale: Optional[Tuple[int, int]] = None,
                  data_root: Optional[str] = None) -> Config:
    """Return a copy of ``cfg`` that trains ``max_iters`` iterations on tiny generated data."""
    if task not in ('cls', 'det', 'hoi'):
        raise ValueError(f"task must be 'cls', 'det' or 'hoi', got {task!r}")
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.model = _strip_pretrained(cfg.model)
    cfg.load_from = None
    cfg.resume = False
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**9)
    cfg.param_scheduler = []
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader',
                'test_evaluator'):
        cfg[key] = None
    hooks = cfg.get('default_hooks') or {}
    hooks['checkpoint'] = dict(type='CheckpointHook', interval=10**9, by_epoch=False,
                               save_last=False)
    hooks['logger'] = dict(type='LoggerHook', interval=1)
    cfg.default_hooks = hooks
    cfg.pop('auto_scale_lr', None)
    loader = cfg.train_dataloader
    loader.batch_size = batch_size
    loader.num_workers = 0
    loader.persistent_workers = False
    loader.sampler = dict(type='DefaultSampler', shuffle=True)
    loader.pop('batch_sampler', None)
    num_samples = batch_size * max_iters
    if task == 'cls':
        size = img_scale[0] if img_scale else infer_cls_img_size(cfg)
        loader.dataset = dict(type='DigitsDataset', split='train', img_size=size,
                              num_samples=max(num_samples, batch_size),
                              pipeline=[dict(type='PackInputs')])
    elif task == 'det':
        from .coco import make_coco_dataset
        root = data_root or osp.join(work_dir, 'coco_tiny')
        make_coco_dataset(root, num_train=max(num_samples, 2), num_val=2)
        loader.dataset = dict(
            type='CocoDataset', data_root=root, ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True),
            pipeline=_det_pipeline(_config_uses_masks(cfg), img_scale or (160, 128)))
    else:
        from .hico import make_hico_dataset  # provided with the HICO-DET dataset
        root = data_root or osp.join(work_dir, 'hico_tiny')
        make_hico_dataset(root, num_train=max(num_samples, 2), num_test=2)
        dataset = loader.dataset
        while 'dataset' in dataset:  # unwrap RepeatDataset & co.
            dataset = dataset.dataset
        dataset.data_root = root
        loader.dataset = dataset
        if img_scale is not None:
            for t in _find_transforms(dataset.get('pipeline', [])):
                if t.get('type') in _RESIZE_TYPES or 'Resize' in str(t.get('type')):
                    if 'scale' in t:
                        t['scale'] = img_scale
                    if 'scales' in t:
                        t['scales'] = [img_scale]
    return cfg


def smoke_train(config_path: str, work_dir: str, cfg_options: Optional[Dict] = None,
                task: str = 'cls', max_iters: int = 1, batch_size: int = 2,
                img_scale: Optional[Tuple[int, int]] = None, data_root: Optional[str] = None):
    """Load ``config_path``, shrink it with :func:`shrink_config`, train, return the runner.

    ``cfg_options`` are merged *after* shrinking, so tests can still override anything.
    The last training losses are available as ``runner.message_hub.get_scalar('train/loss')``.
    """
    from mmengine.runner import Runner

    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(config_path)
    cfg = shrink_config(cfg, work_dir, task=task, max_iters=max_iters, batch_size=batch_size,
                        img_scale=img_scale, data_root=data_root)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def last_losses(runner) -> Dict[str, float]:
    """The latest logged ``train/*loss*`` scalars of a runner, without the ``train/`` prefix."""
    scalars = runner.message_hub.log_scalars
    return {k[len('train/'):]: float(v.current()) for k, v in scalars.items()
            if k.startswith('train/') and 'loss' in k}
