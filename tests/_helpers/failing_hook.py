"""Test-only hook: raises ``ValueError`` in the first training iteration (a failure *inside*
training, which the tools must report with its traceback, not as one input-error line)."""
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

MESSAGE = 'failure inside the training loop (test hook)'


@HOOKS.register_module()
class FailingHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        raise ValueError(MESSAGE)
