"""``SafeCheckpointHook``: mmengine's ``CheckpointHook`` that never loses the last good checkpoint.

Stock ``CheckpointHook`` deletes the outdated checkpoint *before* writing the new one, writes the
new one in place and rewrites ``last_checkpoint`` in place: a run killed during a save with
``max_keep_ckpts=1`` is left with no complete checkpoint. It also deletes the paths recorded in the
resumed message hub (``best_ckpt``), which in a copied run folder are the original run's files.
This subclass, with the same arguments:

* writes every checkpoint and ``last_checkpoint`` atomically on a local ``out_dir`` (temporary name
  in the same folder, fsync, ``os.replace``; :mod:`mmvitreg.utils.atomic_file`);
* deletes outdated (and previous best) checkpoints only after the new file is in place;
* deletes only files inside its own ``out_dir``; recorded best-checkpoint paths of a copied run are
  rebased onto the same names in this run's folder;
* makes an automatic resume (``resume=True``, no ``load_from``) without ``last_checkpoint`` restore
  the newest complete checkpoint, or refuse in one line
  (:func:`mmvitreg.utils.resume.find_resume_checkpoint`), instead of silently starting over.

``tools/train.py`` and the benchmark worker use it in place of ``CheckpointHook``
(:func:`mmvitreg.utils.cli.use_safe_checkpoint_hook`); a config may name it directly::

    default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1))
"""
import os.path as osp
from typing import Any, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmvitreg.registry import HOOKS
from mmvitreg.utils.atomic_file import ATOMIC_BACKEND, atomic_write, remove_stale_temp_files
from mmvitreg.utils.resume import find_resume_checkpoint, is_inside

__all__ = ['SafeCheckpointHook']


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` only record the path (done later)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.paths: List[str] = []

    def remove(self, path: str) -> None:
        self.paths.append(path)

    def rmtree(self, path: str) -> None:
        self.paths.append(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic saves and safe deletion (see the module docstring)."""

    def _is_local(self) -> bool:
        out = self.out_dir
        return '://' not in str(out) if out is not None else True

    def before_run(self, runner) -> None:
        """Pick the checkpoint of an automatic resume (mmengine resumes right after this)."""
        if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
            found = find_resume_checkpoint(runner.work_dir)
            if found is not None:
                runner._load_from = found

    def before_train(self, runner) -> None:
        if self.backend_args is None and self.file_client_args is None and self._is_local():
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if self.save_best is not None:
            if len(self.key_indicators) == 1:
                self.best_ckpt_path = self._rebase(runner, 'best_ckpt', self.best_ckpt_path)
            else:
                for key in self.key_indicators:
                    self.best_ckpt_path_dict[key] = self._rebase(
                        runner, f'best_ckpt_{key}', self.best_ckpt_path_dict[key])
        if is_main_process() and self._is_local() and osp.isdir(self.out_dir):
            for path in remove_stale_temp_files(self.out_dir):
                runner.logger.info(f'removed {path}, left by a save that was killed')

    def _rebase(self, runner, key: str, path: Optional[str]) -> Optional[str]:
        """A recorded checkpoint path, moved into this run's ``out_dir`` (None if not there)."""
        if path is None or not self._is_local() or is_inside(path, self.out_dir):
            return path
        local = osp.join(self.out_dir, osp.basename(path))
        rebased = local if osp.isfile(local) else None
        runner.logger.warning(f'the resumed state names {path}, outside this run\'s folder '
                              f'{self.out_dir} (a copied run?): using {rebased} instead; files of '
                              'other runs are never deleted')
        runner.message_hub.update_info(key, rebased)
        return rebased

    def _remove(self, runner, path: str) -> None:
        """Delete an outdated checkpoint, only if it lies inside this run's ``out_dir``."""
        if self._is_local() and not is_inside(path, self.out_dir):
            runner.logger.warning(f'not deleting {path}: it is outside this run\'s folder '
                                  f'{self.out_dir}')
            return
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in outdated:  # only now that the new checkpoint is complete and recorded
            self._remove(runner, self.file_backend.join_path(self.out_dir,
                                                             self.filename_tmpl.format(old)))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        backend = self.file_backend
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        if is_main_process():
            current = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                       *getattr(self, 'best_ckpt_path_dict', {}).values()}
            for path in deferred.paths:  # the previous best, once the new one is written
                if path not in current:
                    self._remove(runner, path)
