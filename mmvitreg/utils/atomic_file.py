"""Atomic local writes: a file is either its old complete content or its new complete content.

:func:`atomic_write` writes to a temporary name in the same folder (``.NAME.tmp-PID``), fsyncs
it, renames it over ``NAME`` with :func:`os.replace` (atomic on POSIX within one file system) and
fsyncs the folder, so a process killed mid-write leaves the previous file untouched (plus, at
worst, a temporary file that :func:`remove_stale_temp_files` cleans up).

:class:`AtomicLocalBackend` is mmengine's ``LocalBackend`` whose ``put``/``put_text`` write this
way; it is registered as the file backend ``'mmvitreg_atomic_local'``, which
:class:`~mmvitreg.engine.hooks.SafeCheckpointHook` passes to ``Runner.save_checkpoint`` as
``backend_args``.
"""
import glob
import os
import os.path as osp
import re
from pathlib import Path
from typing import List, Union

from mmengine.fileio import LocalBackend, register_backend

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_write', 'remove_stale_temp_files']

ATOMIC_BACKEND = 'mmvitreg_atomic_local'
_TEMP = re.compile(r'^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$')


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on folders
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file, fsync, ``os.replace``)."""
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.tmp-{os.getpid()}')
    if isinstance(data, str):
        data = data.encode('utf-8')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary files that killed :func:`atomic_write` calls left in ``folder``
    (those of processes no longer alive); return their paths."""
    removed = []
    for path in glob.glob(osp.join(glob.escape(folder), '.*.tmp-*')):
        match = _TEMP.match(osp.basename(path))
        if match and int(match['pid']) != os.getpid() and not _alive(int(match['pid'])):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:  # pragma: no cover - raced with another cleaner
                pass
    return removed


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put``/``put_text`` (see the module docstring)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
