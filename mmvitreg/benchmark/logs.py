"""Read what mmengine wrote into a run's work dir (pure file parsing, no torch).

Layout of one benchmark run (``python -m mmvitreg.benchmark.worker CONFIG --work-dir RUN --test
last``)::

    RUN/<YYYYmmdd_HHMMSS>/vis_data/scalars.json   one json object per line (train + val)
    RUN/<YYYYmmdd_HHMMSS>/peak_memory.json        written by PeakMemoryHook
    RUN/last_checkpoint, RUN/epoch_N.pth, RUN/best_*.pth
    RUN/test/<YYYYmmdd_HHMMSS>/<YYYYmmdd_HHMMSS>.json   final test metrics

A resumed run has several timestamp folders; their records are merged (the later one wins for a
repeated step).
"""
import glob
import json
import math
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['log_dirs', 'read_scalars', 'split_train_val', 'load_run_scalars', 'curve',
           'epoch_curve',
           'read_test_metrics', 'last_val_metrics', 'read_peak_memory', 'extract_error',
           'find_checkpoint']

_TS = re.compile(r'^\d{8}_\d{6}$')
# keys of scalars lines that are bookkeeping, not metrics
_NON_METRIC = {'data_time', 'time', 'step', 'epoch', 'iter', 'lr', 'base_lr', 'memory'}


def log_dirs(work_dir: str) -> List[str]:
    """The timestamp folders mmengine created in ``work_dir``, oldest first."""
    if not osp.isdir(work_dir):
        return []
    return [osp.join(work_dir, d) for d in sorted(os.listdir(work_dir))
            if _TS.match(d) and osp.isdir(osp.join(work_dir, d))]


def read_scalars(path: str) -> List[dict]:
    """Records of an mmengine ``scalars.json`` (json lines); a truncated last line is skipped."""
    records = []
    if not osp.isfile(path):
        return records
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # being written right now
            if isinstance(rec, dict):
                records.append(rec)
    return records


def split_train_val(records: Sequence[dict]) -> Tuple[List[dict], List[dict]]:
    """Train records carry ``iter`` (and ``lr``); validation records carry neither."""
    train, val = [], []
    for rec in records:
        (train if ('iter' in rec or 'lr' in rec) else val).append(rec)
    return train, val


def _dedupe(records: List[dict]) -> List[dict]:
    by_step: Dict[float, dict] = {}
    for rec in records:
        by_step[rec.get('step', len(by_step))] = rec
    return [by_step[k] for k in sorted(by_step)]


def load_run_scalars(work_dir: str) -> Tuple[List[dict], List[dict]]:
    """``(train_records, val_records)`` of a training work dir, merged over resumed sessions."""
    train, val = [], []
    for d in log_dirs(work_dir):
        t, v = split_train_val(read_scalars(osp.join(d, 'vis_data', 'scalars.json')))
        train += t
        val += v
    return _dedupe(train), _dedupe(val)


def curve(records: Sequence[dict], key: str) -> Tuple[List[float], List[float]]:
    """``(steps, values)`` of ``key`` over the records that have it (finite values only)."""
    steps, values = [], []
    for rec in records:
        value = rec.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(rec.get('step', len(steps) + 1))
            values.append(float(value))
    return steps, values


def epoch_curve(records: Sequence[dict], key: str) -> Tuple[List[float], List[float]]:
    """``(epochs, values)``: the mean of ``key`` over each epoch's log records."""
    sums: Dict[int, List[float]] = {}
    for rec in records:
        value = rec.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and 'epoch' in rec:
            sums.setdefault(int(rec['epoch']), []).append(float(value))
    epochs = sorted(sums)
    return [float(e) for e in epochs], [sum(sums[e]) / len(sums[e]) for e in epochs]


def _metrics_of(rec: dict) -> Dict[str, float]:
    return {k: float(v) for k, v in rec.items()
            if k not in _NON_METRIC and isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_test_metrics(test_dir: str) -> Optional[Dict[str, float]]:
    """Metrics of the latest ``tools/test.py`` run in ``test_dir`` (``None`` if there is none)."""
    for d in reversed(log_dirs(test_dir)):
        path = osp.join(d, osp.basename(d) + '.json')
        if osp.isfile(path):
            with open(path) as f:
                try:
                    return _metrics_of(json.load(f))
                except json.JSONDecodeError:
                    continue
    return None


def last_val_metrics(val_records: Sequence[dict]) -> Optional[Dict[str, float]]:
    """Metrics of the last validation of a training run (``None`` if it never validated)."""
    return _metrics_of(val_records[-1]) if val_records else None


def read_peak_memory(work_dir: str) -> Dict[str, float]:
    """Largest ``peak_rss_mb`` / ``peak_cuda_mb`` found in PeakMemoryHook's json files and the
    scalars logs below ``work_dir`` (train and test sessions)."""
    peaks: Dict[str, float] = {}

    def take(rec: dict) -> None:
        for key in ('peak_rss_mb', 'peak_cuda_mb'):
            value = rec.get(key)
            if isinstance(value, (int, float)):
                peaks[key] = max(peaks.get(key, 0.0), float(value))

    for path in glob.glob(osp.join(work_dir, '**', 'peak_memory.json'), recursive=True):
        try:
            with open(path) as f:
                take(json.load(f))
        except (OSError, json.JSONDecodeError):
            pass
    for path in glob.glob(osp.join(work_dir, '**', 'vis_data', 'scalars.json'), recursive=True):
        for rec in read_scalars(path):
            take(rec)
    return peaks


_EXC_LINE = re.compile(r'^([A-Za-z_][\w.]*(Error|Exception|Interrupt)|AssertionError)\b.*')


def extract_error(text: str, limit: int = 300) -> str:
    """The one line that says why a run failed, from its captured stdout/stderr.

    Preference: the tools' own ``error: ...`` line, then the last ``SomeError: ...`` line of a
    traceback, then the last non-empty line.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found = None
    for ln in reversed(lines):
        if ln.startswith('error: '):
            found = ln[len('error: '):]
            found = found.split('  [MMVITREG_DEBUG')[0]
            break
    if found is None:
        for ln in reversed(lines):
            if _EXC_LINE.match(ln):
                found = ln
                break
    if found is None:
        found = lines[-1] if lines else 'no output'
    return found if len(found) <= limit else found[:limit - 3] + '...'


def find_checkpoint(work_dir: str, which: str = 'last') -> Optional[str]:
    """Path of the last (``last_checkpoint`` file) or best (``best_*.pth``) checkpoint."""
    if which == 'best':
        best = sorted(glob.glob(osp.join(work_dir, 'best_*.pth')), key=osp.getmtime)
        if best:
            return best[-1]
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            path = f.read().strip()
        if path and not osp.isabs(path):
            path = osp.join(work_dir, path)
        if path and osp.isfile(path):
            return path
        cand = osp.join(work_dir, osp.basename(path))
        if osp.isfile(cand):
            return cand
    ckpts = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime)
    return ckpts[-1] if ckpts else None
