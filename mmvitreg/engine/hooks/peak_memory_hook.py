"""``PeakMemoryHook``: record the peak memory of a run in its scalars log and in a json file.

mmengine's logger already prints a ``memory`` value on CUDA, but it is the peak *since the last
log line* (the log processor resets the CUDA peak counter each time it reads it), and nothing is
recorded on CPU. The regularizer benchmark (``tools/benchmark_regularizers.py``) needs one peak
per run, so this hook keeps running maxima itself:

* ``peak_rss_mb``: the process' maximum resident set size (``getrusage``; data-loader worker
  processes are not included), every device;
* ``peak_cuda_mb``: ``torch.cuda.max_memory_allocated`` of the current device, read after every
  iteration (so a reset by the logger in between loses nothing), only when CUDA is in use.

Both are written into the training log (``vis_data/scalars.json``) with every log line and, at the
end of the run, into ``<log_dir>/peak_memory.json``. In distributed runs each rank measures its
own process; the values of rank 0 are reported.
"""
import json
import os.path as osp
import resource
import sys
from typing import Dict, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mmvitreg.registry import HOOKS

__all__ = ['PeakMemoryHook', 'process_peak_rss_mb']


def process_peak_rss_mb() -> float:
    """Maximum resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on
    macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == 'darwin' else rss / 1024.0


@HOOKS.register_module()
class PeakMemoryHook(Hook):
    """Log the run's peak CPU RSS and peak CUDA memory (MiB) and dump them at the end.

    Args:
        out_file: name of the json file written into the run's log dir at the end of the run
            (``None`` to skip it).
    """

    # Runs before LoggerHook (BELOW_NORMAL), so the values appear in the same log line.
    priority = 'NORMAL'

    def __init__(self, out_file: Optional[str] = 'peak_memory.json') -> None:
        if out_file is not None and (not isinstance(out_file, str) or not out_file):
            raise ValueError(
                f'PeakMemoryHook out_file must be a file name or None, got {out_file!r}')
        self.out_file = out_file
        self.peak_cuda_mb = 0.0

    def _update(self) -> Dict[str, float]:
        values = {'peak_rss_mb': process_peak_rss_mb()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            allocated = torch.cuda.max_memory_allocated() / (1024.0 * 1024.0)
            self.peak_cuda_mb = max(self.peak_cuda_mb, allocated)
            values['peak_cuda_mb'] = self.peak_cuda_mb
        return values

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for key, value in self._update().items():
            runner.message_hub.update_scalar(f'train/{key}', value)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._update()

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._update()

    def after_run(self, runner) -> None:
        values = self._update()
        if self.out_file is None or not is_main_process():
            return
        values['device'] = 'cuda' if 'peak_cuda_mb' in values else 'cpu'
        with open(osp.join(runner.log_dir, self.out_file), 'w') as f:
            json.dump(values, f)
