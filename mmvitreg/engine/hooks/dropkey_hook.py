"""``DropKeyScheduleHook``: a final training phase without DropKey (train/test alignment).

DropKey perturbs attention only in training; finishing training with a few epochs (or
iterations) of plain attention aligns the network with the deterministic test-time attention.
The hook decides *before every training iteration* from the runner's current epoch/iteration
whether the run is inside the final phase, so it is correct after ``--resume`` as well, and it
unwraps DDP/FSDP model wrappers. DropKey modules keep their ratios; only their ``enabled`` flag
is switched (no parameters, so checkpoints are unaffected).

The phase concerns *training iterations* only: DropKey is switched back on for validation and
testing (and after training), so Monte-Carlo averaging (``mc_samples``) samples during the
in-process validation after the phase exactly as ``tools/test.py`` does on the saved checkpoint:
the validation curve and the best-checkpoint choice use the test estimator.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmvitreg.ops.dropkey import dropkey_modules
from mmvitreg.registry import HOOKS

__all__ = ['DropKeyScheduleHook']


@HOOKS.register_module()
class DropKeyScheduleHook(Hook):
    """Switch DropKey off for the last ``last_epochs`` epochs or ``last_iters`` iterations.

    Args:
        last_epochs: length of the final phase in epochs (epoch-based loops).
        last_iters: length of the final phase in iterations (any loop). Give exactly one.
    """

    priority = 'NORMAL'

    def __init__(self, last_epochs: Optional[int] = None, last_iters: Optional[int] = None):
        if (last_epochs is None) == (last_iters is None):
            raise ValueError('DropKeyScheduleHook needs exactly one of last_epochs or '
                             f'last_iters, got last_epochs={last_epochs!r}, '
                             f'last_iters={last_iters!r}')
        for name, value in (('last_epochs', last_epochs), ('last_iters', last_iters)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f'DropKeyScheduleHook {name} must be an integer >= 0, '
                                 f'got {value!r}')
        self.last_epochs = last_epochs
        self.last_iters = last_iters
        self._state: Optional[bool] = None

    def in_final_phase(self, runner) -> bool:
        if self.last_iters is not None:
            return runner.iter >= runner.max_iters - self.last_iters
        return runner.epoch >= runner.max_epochs - self.last_epochs

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not dropkey_modules(model):
            runner.logger.warning('DropKeyScheduleHook: the model has no DropKey module')
        self._state = None

    @staticmethod
    def _set(runner, enabled: bool) -> list:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        mods = dropkey_modules(model)
        for m in mods:
            m.enabled = enabled
        return mods

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        enabled = not self.in_final_phase(runner)
        if enabled == self._state:
            return
        mods = self._set(runner, enabled)
        if self._state is not None or not enabled:
            runner.logger.info(f'DropKeyScheduleHook: DropKey {"on" if enabled else "off"} '
                               f'({len(mods)} modules) from epoch {runner.epoch} / iteration '
                               f'{runner.iter}')
        self._state = enabled

    # validation / testing always see DropKey enabled (the estimator of tools/test.py)
    def before_val(self, runner) -> None:
        self._set(runner, True)

    def after_val(self, runner) -> None:
        if self._state is not None:
            self._set(runner, self._state)

    def before_test(self, runner) -> None:
        self._set(runner, True)

    def after_train(self, runner) -> None:
        self._set(runner, True)
        self._state = None
