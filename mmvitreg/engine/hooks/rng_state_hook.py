"""``RNGStateHook``: exact ``--resume`` (random generators in the checkpoint) + DropKey's step.

mmengine stores no random-generator state in checkpoints: after ``--resume`` drop path, dropout,
random augmentation in the main process and anything else drawing from the global generators
diverge from the uninterrupted run. This hook

* saves the states of Python's ``random``, NumPy's global generator, torch's CPU generator and
  every CUDA device's generator of **every rank** into the checkpoint (``checkpoint['rng_state']
  = dict(world_size=W, states=[rank 0, rank 1, ...])``; with several ranks they are gathered on
  the iterations/epochs where a ``CheckpointHook`` saves, since only rank 0 writes the file);
* restores each rank's own state when training resumes, right before the first resumed batch is
  fetched (after mmengine re-seeds and skips the batches already trained in iteration-based
  loops), so the resumed run draws exactly what the uninterrupted run drew;
* keeps validation inside training from consuming the training stream (states saved before and
  restored after each validation), so the stream does not depend on when validation runs;
* sets DropKey's step context (:func:`mmvitreg.ops.dropkey.set_step`) before every training
  iteration and its run seed from ``runner.seed``: masks are a pure function of (seed, iteration,
  layer, rank, call) and survive a resume exactly;
* makes the DropKey layer ids unique model-wide before a run (:func:`assign_layer_ids`: subtrees
  regularized on their own, e.g. two towers, would otherwise draw identical masks); the ids
  depend only on the model's structure, so a resumed run gets the same ones.

Not covered: dataloader worker processes (their generators are re-created by PyTorch; with
``persistent_workers=True`` a resumed run's augmentation differs from the uninterrupted one) and
a resume with a different number of ranks (restored where the rank exists, with a warning).
States hold only tensors and plain Python values, so torch's safe loader reads them.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook

from mmvitreg.ops.dropkey import assign_layer_ids
from mmvitreg.ops.dropkey.random import set_seed, set_step
from mmvitreg.registry import HOOKS

__all__ = ['RNGStateHook', 'capture_rng_state', 'restore_rng_state']

CHECKPOINT_KEY = 'rng_state'


def capture_rng_state() -> dict:
    """This process' generator states (python, numpy, torch CPU, every initialised CUDA device)."""
    np_state = np.random.get_state(legacy=False)
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    return dict(python=random.getstate(),
                numpy=dict(bit_generator=np_state['bit_generator'],
                           key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                           pos=int(np_state['state']['pos']),
                           has_gauss=int(np_state['has_gauss']),
                           gauss=float(np_state['gauss'])),
                torch=torch.get_rng_state(),
                cuda=cuda)


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only if the device count matches)."""
    random.setstate(_as_tuple(state['python']))
    npd = state['numpy']
    np.random.set_state(dict(bit_generator=npd['bit_generator'],
                             state=dict(key=npd['key'].numpy().astype(np.uint32),
                                        pos=npd['pos']),
                             has_gauss=npd['has_gauss'], gauss=npd['gauss']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s, i)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class _RestoreBeforeFetch:
    """Wraps an iteration-based loop's dataloader iterator: restores the saved state right
    before the first batch after the ``skip`` batches mmengine replays on resume."""

    def __init__(self, loop, skip: int, state: dict):
        self._loop, self._inner = loop, loop.dataloader_iterator
        self._left, self._state = skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._left == 0:
            restore_rng_state(self._state)
            self._loop.dataloader_iterator = self._inner  # unwrap: one restore only
            return next(self._inner)
        self._left -= 1
        return next(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Random-generator states in checkpoints (exact ``--resume``) and DropKey's step context.

    Add it to ``custom_hooks`` (``dict(type='RNGStateHook')``). No arguments.
    """

    priority = 'LOW'  # before CheckpointHook (VERY_LOW) in after_train_iter / after_train_epoch

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._gathered: Optional[List[dict]] = None
        self._saved_for_val: Optional[dict] = None
        self._training = False

    # ---------------------------------------------------------------- seed and step
    def before_run(self, runner) -> None:
        assign_layer_ids(runner.model)

    def before_train(self, runner) -> None:
        self._training = True
        seed = getattr(runner, 'seed', None)
        if isinstance(seed, int):
            set_seed(seed)
        set_step(runner.iter)
        pending, self._pending = self._pending, None
        if pending is None or runner.iter == 0:
            return  # fresh run (or load_from: weights only)
        state = self._my_state(runner, pending)
        if state is None:
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator') and not getattr(loop, 'by_epoch', False):
            loop.dataloader_iterator = _RestoreBeforeFetch(loop, runner.iter, state)
        else:
            restore_rng_state(state)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        set_step(runner.iter)

    def after_train(self, runner) -> None:
        self._training = False

    # ---------------------------------------------------------------- validation is neutral
    def before_val(self, runner) -> None:
        if self._training:
            self._saved_for_val = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._saved_for_val is not None:
            restore_rng_state(self._saved_for_val)
            self._saved_for_val = None

    # ---------------------------------------------------------------- checkpoints
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if get_world_size() > 1 and self._checkpoint_due(runner, by_epoch=False):
            self._gathered = all_gather_object(capture_rng_state())

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and self._checkpoint_due(runner, by_epoch=True):
            self._gathered = all_gather_object(capture_rng_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._gathered if get_world_size() > 1 else None
        if states is None:
            states = [capture_rng_state()]
        checkpoint[CHECKPOINT_KEY] = dict(world_size=len(states), states=states)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get(CHECKPOINT_KEY)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        """Whether a CheckpointHook saves at this point (all ranks decide alike)."""
        hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        if not hooks:
            return False
        for h in hooks:
            try:
                if bool(h.by_epoch) != by_epoch:
                    continue
                if by_epoch:
                    due = h.every_n_epochs(runner, h.interval, h.save_begin) or (
                        h.save_last and h.is_last_train_epoch(runner))
                else:
                    due = h.every_n_train_iters(runner, h.interval, h.save_begin) or (
                        h.save_last and h.is_last_train_iter(runner))
            except (AttributeError, TypeError):  # another mmengine: gather every time
                due = True
            if due:
                return True
        return False

    @staticmethod
    def _my_state(runner, pending: dict) -> Optional[dict]:
        states = pending.get('states') or []
        rank, world = get_rank(), get_world_size()
        if len(states) != world:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds generator states of {len(states)} ranks, this '
                f'run has {world}; ' + ('restoring by rank where present' if rank < len(states)
                                        else f'rank {rank} keeps its fresh state'))
        return states[rank] if rank < len(states) else None
