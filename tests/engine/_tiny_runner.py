"""A tiny in-process mmengine ``Runner`` (a 2-parameter model, 4 samples) for checkpoint tests."""
import itertools
import logging
import time
from typing import List, Optional

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmvitreg.engine.hooks import SafeCheckpointHook

_NAMES = itertools.count()


class TinyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - 1) ** 2).mean())
        return [dict(pred=o) for o in out]


class CountingMetric(BaseMetric):
    """``score``: the wall-clock time (a new best at every validation, also after a resume)."""
    default_prefix = ''

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results) -> dict:
        return dict(score=time.time())


class StartIter(Hook):
    """Records the iteration training starts from (after mmengine's resume)."""

    def __init__(self) -> None:
        self.start: Optional[int] = None

    def before_train(self, runner) -> None:
        self.start = runner.iter


def _loader() -> DataLoader:
    data = [dict(inputs=torch.tensor([float(i)])) for i in range(4)]
    return DataLoader(data, batch_size=2, collate_fn=lambda b: dict(
        inputs=torch.stack([d['inputs'] for d in b])))


def tiny_runner(work_dir: str, max_iters: int, resume: bool = False,
                hook: Optional[Hook] = None, save_best: Optional[str] = None,
                extra_hooks: Optional[List[Hook]] = None) -> Runner:
    """A runner saving every iteration with ``hook`` (default ``SafeCheckpointHook``)."""
    hook = hook or SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1,
                                      save_best=save_best, rule='greater' if save_best else None)
    val = dict(val_dataloader=_loader(), val_cfg=dict(), val_evaluator=[CountingMetric()]) \
        if save_best else {}
    return Runner(
        model=TinyModel(), work_dir=work_dir, train_dataloader=_loader(),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=hook, logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=list(extra_hooks or []), resume=resume, log_level=logging.WARNING,
        experiment_name=f'tiny{next(_NAMES)}', default_scope='mmengine', **val)
