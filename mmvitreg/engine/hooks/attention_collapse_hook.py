"""``AttentionCollapseHook``: DeepViT's cross-layer attention similarity after validation.

After every ``interval``-th validation it runs the model on the first ``num_batches`` batches of
the validation loader, computes the cross-layer similarity matrix of the attention maps
(:func:`mmvitreg.utils.attention_maps.cross_layer_similarity`, averaged over heads, tokens and
images), logs it, records ``attn_collapse/adjacent`` (mean similarity of consecutive layers) and
``attn_collapse/last_half`` (mean off-diagonal similarity among the deeper half of the layers) as
scalars, and saves ``attention_collapse/epoch_<E>_iter_<I>.png`` (+ ``.npy``) in the work dir.

Config::

    custom_hooks = [dict(type='AttentionCollapseHook', num_batches=2, interval=1)]
"""
import os
import os.path as osp
from typing import Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmvitreg.registry import HOOKS
from mmvitreg.utils.attention_maps import (SimilarityAccumulator, collect_attention_maps,
                                           format_similarity, save_similarity_heatmap)

__all__ = ['AttentionCollapseHook', 'collapse_summary']


def collapse_summary(sim: torch.Tensor) -> dict:
    """Scalars of a head-averaged ``(L, L)`` similarity matrix."""
    if sim.dim() == 3:
        sim = sim.mean(-1)
    num = sim.shape[0]
    adjacent = float(torch.diagonal(sim, offset=1).mean()) if num > 1 else 1.0
    start = num // 2
    deep = sim[start:, start:]
    k = deep.shape[0]
    last_half = float((deep.sum() - deep.diagonal().sum()) / (k * k - k)) if k > 1 else 1.0
    return dict(adjacent=adjacent, last_half=last_half)


@HOOKS.register_module()
class AttentionCollapseHook(Hook):
    """Measure attention collapse (DeepViT Eq. 4) on a few validation batches.

    Args:
        num_batches: validation batches to use (>= 1).
        interval: run after every ``interval``-th validation.
        target: restrict to attention modules under this module path (default: all).
        stage: ``'reattention'`` (re-generated maps of Re-attention layers) or ``'softmax'``.
        out_dir: folder for the PNG/npy files (default ``<work_dir>/attention_collapse``).
    """

    priority = 'LOW'

    def __init__(self, num_batches: int = 2, interval: int = 1, target: str = '',
                 stage: str = 'reattention', out_dir: Optional[str] = None) -> None:
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'AttentionCollapseHook num_batches must be an integer >= 1, '
                             f'got {num_batches!r}')
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'AttentionCollapseHook interval must be an integer >= 1, '
                             f'got {interval!r}')
        if stage not in ('reattention', 'softmax'):
            raise ValueError(f"AttentionCollapseHook stage must be 'reattention' or 'softmax', "
                             f'got {stage!r}')
        self.num_batches = num_batches
        self.interval = interval
        self.target = target
        self.stage = stage
        self.out_dir = out_dir
        self._val_count = 0
        self.last_similarity: Optional[torch.Tensor] = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._val_count += 1
        if self._val_count % self.interval:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        acc = SimilarityAccumulator()
        with torch.no_grad():
            for i, data in enumerate(runner.val_dataloader):
                if i >= self.num_batches:
                    break
                data = model.data_preprocessor(data, False)
                acc.update(collect_attention_maps(model, data['inputs'], self.target,
                                                  self.stage))
        sim = acc.result()
        self.last_similarity = sim
        summary = collapse_summary(sim)
        for key, value in summary.items():
            runner.message_hub.update_scalar(f'val/attn_collapse/{key}', value)
        runner.logger.info(
            f'cross-layer attention similarity ({acc.count} images, epoch {runner.epoch}, '
            f'iter {runner.iter}): adjacent={summary["adjacent"]:.3f} '
            f'last_half={summary["last_half"]:.3f}\n{format_similarity(sim)}')
        if is_main_process():
            out_dir = self.out_dir or osp.join(runner.work_dir, 'attention_collapse')
            os.makedirs(out_dir, exist_ok=True)
            stem = osp.join(out_dir, f'epoch_{runner.epoch}_iter_{runner.iter}')
            np.save(stem + '.npy', sim.numpy())
            save_similarity_heatmap(sim, stem + '.png',
                                    title=f'attention similarity, epoch {runner.epoch}')
