"""Test-only hook: raises ``RuntimeError`` in the first iteration of epoch ``$FAIL_IN_EPOCH``
(1-based) while that variable is set, so a test can crash a real run part-way and resume it."""
import os

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

MESSAGE = 'crash in epoch {} (test hook)'


@HOOKS.register_module()
class FailInEpochHook(Hook):

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if os.environ.get('FAIL_IN_EPOCH') == str(runner.epoch + 1):
            raise RuntimeError(MESSAGE.format(runner.epoch + 1))
