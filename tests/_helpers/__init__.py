"""Shared test helpers: constants, running the repo's tools in a subprocess or in-process."""
import glob
import importlib.util
import logging
import os
import os.path as osp
import subprocess
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator, List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The benchmark tests' stand-in worker (instant mmengine-style logs) and the base config of their
# presets (only what the spec and the stand-in read).
FAKE_WORKER = osp.join(REPO, 'tests', 'benchmark', '_fake_worker.py')
BENCHMARK_BASE_CONFIG = """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', drop_rate=0.0))
train_cfg = dict(by_epoch=True, max_epochs=2)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
randomness = dict(seed=0)
"""
DIGITS_CONFIG = osp.join(REPO, 'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py')
# Shrinks the digits demo config to seconds: 64 train / 32 test images, batch 16.
TINY_DIGITS_OPTIONS = [
    'train_dataloader.dataset.num_samples=64', 'val_dataloader.dataset.num_samples=32',
    'test_dataloader.dataset.num_samples=32', 'train_dataloader.batch_size=16',
    'val_dataloader.batch_size=32', 'test_dataloader.batch_size=32',
]


def tiny_dropkey_digits_config(dropkey: dict, batch_size: int, train_cfg: dict):
    """The digits demo config as a 2-block width-32 ``Regularized`` ViT with ``dropkey`` on 8
    training images, trained in-process (no validation, test, checkpoints or LR schedule)."""
    from mmengine.config import Config
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.model.backbone = dict(cfg.model.backbone, type='Regularized', host='VisionTransformer',
                              arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                        feedforward_channels=64), dropkey=dict(dropkey))
    cfg.model.head.in_channels = 32
    cfg.train_dataloader.dataset.num_samples = 8
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_cfg = train_cfg
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = None
    cfg.param_scheduler = []
    return cfg


def run_tool(args: List[str], cwd: Optional[str] = None, timeout: int = 600,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``python <args>`` (a tool of this repo) and return the completed process."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '2')
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable] + args, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` of this repo as a module (cached), to call its ``main(argv)``."""
    module_name = f'_mmvitreg_tool_{name.replace("/", "_")}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name,
                                                      osp.join(REPO, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@contextmanager
def fresh_mmengine_globals() -> Iterator[None]:
    """Run a block as if in a fresh process as far as mmengine's named global instances go.

    A Runner registers its logger, message hub and visualizer under ``<config>_<timestamp>``
    (seconds), so two runs of one config in the same second would share them. Instances created
    in the block are dropped afterwards (log files closed), the previous ones restored.
    """
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    classes = (MMLogger, MessageHub, Visualizer, DefaultScope)
    saved = {cls: dict(cls._instance_dict) for cls in classes}
    try:
        yield
    finally:
        for cls in classes:
            for name, instance in list(cls._instance_dict.items()):
                if name not in saved[cls] and isinstance(instance, logging.Logger):
                    for handler in list(instance.handlers):
                        handler.close()
                        instance.removeHandler(handler)
            cls._instance_dict.clear()
            cls._instance_dict.update(saved[cls])


def run_main(tool: str, args: List[str]):
    """Call ``tools/<tool>.py``'s ``main(args)`` in this process and return what it returns
    (exceptions propagate; bad input raises ``SystemExit(1)`` after printing its ``error:`` line
    on stderr)."""
    main = load_tool(tool).main
    with fresh_mmengine_globals():
        return main([str(a) for a in args])


def read_logs(work_dir: str) -> str:
    """The text of the runner logs (``WORK_DIR/<timestamp>/<timestamp>.log``) of a work dir."""
    text = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', '*.log'))):
        with open(path) as f:
            text.append(f.read())
    return '\n'.join(text)


def empty_some_hico_train_images(root: str) -> None:
    """In a generated HICO-DET train split (>= 3 images): entry 1 keeps its boxes without
    HOIs, entry 2 has neither boxes nor HOIs."""
    import json
    path = osp.join(root, 'annotations', 'trainval_hico.json')
    with open(path) as f:
        entries = json.load(f)
    entries[1]['hoi_annotation'] = []
    entries[2]['annotations'] = []
    entries[2]['hoi_annotation'] = []
    with open(path, 'w') as f:
        json.dump(entries, f)
