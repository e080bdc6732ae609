"""Test-only hook: each rank writes how many training iterations it ran (proves DDP ranks train)."""
import os.path as osp

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class RankMarkerHook(Hook):

    def __init__(self):
        self.iters = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters += 1

    def after_train(self, runner):
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.txt'), 'w') as f:
            f.write(f'{get_world_size()} {self.iters}')
