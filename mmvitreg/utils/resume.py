"""Which checkpoint an automatic ``--resume`` restores: never silently none when there are some.

mmengine reads ``WORK_DIR/last_checkpoint`` and, when that file is missing, starts the run over
although ``epoch_N.pth``/``iter_N.pth`` files are there. :func:`find_resume_checkpoint` instead:

* uses the file ``last_checkpoint`` names when it exists and is complete; a path recorded by a
  copied run folder (outside this work dir) is replaced by the file of the same name inside it;
* otherwise takes the newest *complete* ``epoch_N.pth``/``iter_N.pth`` of the work dir (highest N),
  skipping truncated or corrupt ones with a warning;
* raises one :class:`ResumeError` line when checkpoints are there but none is complete.

"Complete" means a readable torch zip archive whose every entry passes its CRC check (what a save
killed midway or a truncated copy fails), checked without unpickling anything.
"""
import glob
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

from mmengine.logging import print_log

__all__ = ['ResumeError', 'checkpoint_problem', 'find_resume_checkpoint', 'is_inside']

_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


class ResumeError(ValueError):
    """``--resume`` cannot find a complete checkpoint to restore."""


def is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (symlinks resolved)."""
    real, root = osp.realpath(path), osp.realpath(folder).rstrip(os.sep)
    return real == root or real.startswith(root + os.sep)


def checkpoint_problem(path: str) -> Optional[str]:
    """``None`` when ``path`` is a complete torch checkpoint, else why it is not (a few words)."""
    if not osp.isfile(path):
        return 'missing'
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
                return 'no data.pkl in the archive'
            bad = archive.testzip()
            if bad is not None:
                return f'bad CRC in {bad}'
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f'truncated or not a torch zip archive ({str(exc).splitlines()[0][:80]})'
    return None


def _numbered(work_dir: str) -> List[Tuple[int, float, str]]:
    found = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        match = _NAME.match(osp.basename(path))
        if match:
            found.append((int(match.group(2)), osp.getmtime(path), path))
    return sorted(found, reverse=True)


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint an automatic resume of ``work_dir`` restores, ``None`` when the work dir
    has no checkpoint at all (a fresh start); see the module docstring."""
    marker = osp.join(work_dir, 'last_checkpoint')
    recorded = None
    if osp.isfile(marker):
        with open(marker) as f:
            recorded = f.read().strip() or None
    if recorded is not None:
        local = osp.join(work_dir, osp.basename(recorded))
        if not is_inside(recorded, work_dir) and osp.isfile(local):
            print_log(f'last_checkpoint names {recorded}, outside this work dir (a copied run '
                      f'folder?): resuming from {local}', logger='current')
            recorded = local
        problem = checkpoint_problem(recorded)
        if problem is None:
            return recorded
        print_log(f'last_checkpoint names {recorded}, which is {problem}: looking for the newest '
                  'complete checkpoint instead', logger='current', level=30)
    candidates = _numbered(work_dir)
    skipped = []
    for _, _, path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if recorded is None:
                print_log(f'{marker} is missing: resuming from the newest complete checkpoint '
                          f'{path}', logger='current', level=30)
            return path
        skipped.append(f'{osp.basename(path)}: {problem}')
        print_log(f'skipping checkpoint {path} ({problem})', logger='current', level=30)
    if skipped:
        raise ResumeError(
            f'--resume: no complete checkpoint in {work_dir} ({"; ".join(skipped[:3])}); pass '
            '--resume PATH to choose one, or use a new work dir to start over')
    if recorded is not None:
        raise ResumeError(f'--resume: last_checkpoint names {recorded}, which does not exist, and '
                          f'{work_dir} has no epoch_N.pth/iter_N.pth; pass --resume PATH or use '
                          'a new work dir to start over')
    others = sorted(osp.basename(p) for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth')))
    if others:
        raise ResumeError(f'--resume: {work_dir} has no last_checkpoint and no epoch_N.pth/'
                          f'iter_N.pth, only {", ".join(others[:3])}; pass --resume PATH to '
                          'choose one, or use a new work dir to start over')
    return None
