"""``TrainLoopCheckHook``: refuse model settings that do not fit the training loop, before the
first iteration.

Some settings can only be judged against the loop that runs them (e.g. DRLoc's epoch-counted
lambda schedule on a loop reporting a single epoch). Any module of the model with a
``check_train_loop(max_epochs)`` method is asked in ``before_train`` (after mmengine has built the
loop, before any iteration), so a bad setting is one error at start-up instead of a failure
inside the loop. ``tools/train.py`` adds the hook to every run.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmvitreg.registry import HOOKS

__all__ = ['TrainLoopCheckHook']


@HOOKS.register_module()
class TrainLoopCheckHook(Hook):
    """Call ``check_train_loop(max_epochs)`` of every model module that defines it."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for module in model.modules():
            check = getattr(module, 'check_train_loop', None)
            if callable(check):
                check(int(runner.max_epochs))
