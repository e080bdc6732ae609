"""How runs are started: one worker process (or ``torchrun`` group) per run, ``--jobs`` at once.

Each run is ``python -m mmvitreg.benchmark.worker RUN_CONFIG --work-dir RUN [--resume]
[--test last|best]``, an importable module that drives mmengine's ``Runner``, so the benchmark
works from an installed package. ``MMVITREG_BENCHMARK_WORKER`` replaces that command prefix (e.g.
a site wrapper; the tests use a stand-in).

Parallel runs get *slots*: on GPUs each slot is ``gpus_per_run`` devices exported as
``CUDA_VISIBLE_DEVICES`` (a run with K > 1 devices is ``torchrun`` with K processes); on CPU every
run uses ``threads_per_run`` threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, default 1) however
many run at once: the thread count changes the order of floating-point sums, so a run's numbers
would otherwise depend on ``--jobs``. A slot's :attr:`Slot.runtime` (device, threads or GPU
models, torch version) is part of each run's fingerprint, so a finished run is reused (or an
interrupted one resumed) only where it would give the same numbers. A run holds an
exclusive ``flock`` on ``<run dir>.lock`` while it executes, so two benchmark processes sharing a
work dir never run the same run at once; the worker inherits the locked file, so the lock is held
as long as the tool *or* its worker lives, and is free (taken over) once both are gone.

Workers die with the tool: each starts with a parent-death signal (Linux
``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set by a tiny exec wrapper, not a ``preexec_fn``, since runs
are started from threads), so even ``SIGKILL`` of the tool stops them; ``SIGTERM``/``SIGHUP``/
``SIGINT`` stop the sweep cleanly (:func:`mmvitreg.benchmark.runner.execute_all` stops each worker's
process group and the interrupted runs stay resumable). ``torchrun`` ranks set the same signal
themselves (:func:`die_with_parent` in the worker).
"""
import ctypes
import ctypes.util
import fcntl
import os
import os.path as osp
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .resources import BATCH_POLICIES

__all__ = ['LaunchOptions', 'Slot', 'make_slots', 'worker_command', 'run_process', 'run_lock',
           'RunLock', 'Interrupted', 'visible_devices', 'die_with_parent', 'gpu_name',
           'describe_runtime']

WORKER_ENV = 'MMVITREG_BENCHMARK_WORKER'
WORKER_MODULE = 'mmvitreg.benchmark.worker'


class Interrupted(Exception):
    """The benchmark was asked to stop while a run was in progress (the run stays resumable)."""


def visible_devices() -> List[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else all CUDA devices."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [d.strip() for d in env.split(',') if d.strip() and d.strip() != '-1']
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch / broken driver: CPU
        return []


def gpu_name(device: str) -> str:
    """The model of GPU ``device`` (an id of :func:`visible_devices`), ``'cuda'`` when unknown
    (no driver here, or an id this process does not see)."""
    try:
        import torch
        index = visible_devices().index(device)  # torch numbers the visible devices 0, 1, ...
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(index)
    except Exception:  # not visible / broken driver: the device kind alone
        pass
    return 'cuda'


def _torch_version() -> str:
    """torch's version with its build tag (e.g. ``2.4.1+cu121``), as the workers import it."""
    try:
        import torch
        return str(torch.__version__)
    except ImportError:  # pragma: no cover - torch comes with mmengine
        return 'unknown'


def describe_runtime(runtime: Optional[Dict[str, Any]]) -> str:
    """One phrase for a slot's runtime, e.g. ``'cpu, 1 thread, torch 2.4.1'``."""
    if not runtime:
        return 'an unrecorded environment'
    if runtime.get('device') == 'cpu':
        n = runtime.get('threads')
        where = f"cpu, {n} thread{'s' * (n != 1)}"
    else:
        gpus = list(runtime.get('gpus') or [])
        names = sorted(set(gpus))
        where = f"{len(gpus)} x {names[0]}" if len(names) == 1 else ', '.join(gpus) or 'cuda'
    return f"{where}, torch {runtime.get('torch', '?')}"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class LaunchOptions:
    """How runs are started; see the module docstring.

    Args:
        jobs: runs at once.
        gpus_per_run: devices (= processes) per run on GPUs.
        devices: GPU ids to share out (default: :func:`visible_devices`; ``[]`` forces CPU).
        cpus: cores split between the processes of GPU runs (default: those this process may
            use).
        threads_per_run: threads of each run's process (CPU default 1, whatever ``jobs``;
            GPU default: ``cpus`` split between the processes).
        timeout: seconds after which a run's process is stopped and the run recorded failed.
        batch_policy: ``'keep-total'`` (each run keeps its preset's total batch and LR) or
            ``'scale-lr'`` (per-GPU batch kept, LR scaled by mmengine's ``auto_scale_lr``); see
            :mod:`.resources`.
        keep_checkpoints: the last N checkpoints each run keeps (``None``: the config's own).
    """
    jobs: int = 1
    gpus_per_run: int = 1
    devices: Optional[List[str]] = None
    cpus: Optional[int] = None
    python: str = sys.executable
    worker: Optional[List[str]] = None
    timeout: Optional[float] = None
    poll_s: float = 2.0
    progress_every_s: float = 15.0
    env: Dict[str, str] = field(default_factory=dict)
    vis_backends: List[str] = field(default_factory=list)
    batch_policy: str = 'keep-total'
    keep_checkpoints: Optional[int] = 1
    threads_per_run: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f'--jobs must be an integer >= 1, got {self.jobs!r}')
        if not isinstance(self.gpus_per_run, int) or self.gpus_per_run < 1:
            raise ValueError(f'--gpus-per-run must be an integer >= 1, got {self.gpus_per_run!r}')
        if self.threads_per_run is not None and (not isinstance(self.threads_per_run, int) or
                                                 self.threads_per_run < 1):
            raise ValueError('--threads-per-run must be an integer >= 1, got '
                             f'{self.threads_per_run!r}')
        bad = [b for b in self.vis_backends if b not in VIS_BACKENDS]
        if bad:
            raise ValueError(f'--vis-backend must be one of {sorted(VIS_BACKENDS)}, got {bad}')
        if self.batch_policy not in BATCH_POLICIES:
            raise ValueError(f'--batch-policy must be one of {BATCH_POLICIES}, got '
                             f'{self.batch_policy!r}')
        if self.keep_checkpoints is not None and (not isinstance(self.keep_checkpoints, int)
                                                  or self.keep_checkpoints < 1):
            raise ValueError("--keep-checkpoints must be an integer >= 1 or 'all', got "
                             f'{self.keep_checkpoints!r}')
        if self.worker is None:
            env = os.environ.get(WORKER_ENV)
            self.worker = shlex.split(env) if env else [self.python, '-m', WORKER_MODULE]


VIS_BACKENDS = {'tensorboard': 'TensorboardVisBackend', 'wandb': 'WandbVisBackend',
                'mlflow': 'MLflowVisBackend'}


@dataclass
class Slot:
    """Where one run executes: extra environment, the number of processes and ``runtime``,
    what of the place changes a run's numbers (part of its fingerprint)."""
    index: int
    env: Dict[str, str]
    nproc: int = 1
    label: str = 'cpu'
    runtime: Dict[str, Any] = field(default_factory=dict)


def make_slots(opts: LaunchOptions) -> List[Slot]:
    """``opts.jobs`` slots: disjoint GPU groups, or CPU runs of ``opts.threads_per_run`` (1)
    threads each."""
    devices = visible_devices() if opts.devices is None else list(opts.devices)
    cpus = opts.cpus or _cpu_count()
    version = _torch_version()
    if devices:
        k = opts.gpus_per_run
        if opts.jobs * k > len(devices):
            raise ValueError(f'--jobs {opts.jobs} x --gpus-per-run {k} needs {opts.jobs * k} '
                             f'GPUs, but {len(devices)} are visible ({",".join(devices)})')
        threads = str(opts.threads_per_run or max(1, cpus // (opts.jobs * k)))
        groups = [devices[i * k:(i + 1) * k] for i in range(opts.jobs)]
        return [Slot(i, {'CUDA_VISIBLE_DEVICES': ','.join(group), 'OMP_NUM_THREADS': threads,
                         'MKL_NUM_THREADS': threads}, k, 'gpu ' + ','.join(group),
                     dict(device='cuda', gpus=[gpu_name(d) for d in group], torch=version))
                for i, group in enumerate(groups)]
    if opts.gpus_per_run > 1:
        raise ValueError(f'--gpus-per-run {opts.gpus_per_run} needs CUDA devices, none is visible')
    threads = opts.threads_per_run or 1
    return [Slot(i, {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}, 1,
                 f'cpu x{threads}', dict(device='cpu', threads=threads, torch=version))
            for i in range(opts.jobs)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def worker_command(cfg_path: str, work_dir: str, opts: LaunchOptions, slot: Slot, resume: bool,
                   test: Optional[str]) -> List[str]:
    """The command line of one run (``torchrun`` when the slot has several processes)."""
    args = [cfg_path, '--work-dir', work_dir] + (['--resume'] if resume else []) + \
        (['--test', test] if test else [])
    prefix = list(opts.worker)
    if slot.nproc == 1:
        return prefix + args
    target = prefix[1:] if len(prefix) > 1 else prefix  # '-m module' or 'script.py'
    return [opts.python, '-m', 'torch.distributed.run', f'--nproc_per_node={slot.nproc}',
            f'--master_port={_free_port()}'] + target + args + ['--launcher', 'pytorch']


_PR_SET_PDEATHSIG = 1

# ``python -c`` wrapper: set the parent-death signal, then exec the worker command (same pid). If
# the tool died before the signal was set (the parent pid changed), exit at once.
_DIE_WITH_PARENT = (
    'import ctypes, ctypes.util, os, signal, sys\n'
    'libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)\n'
    'libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)\n'
    'if os.getppid() != int(sys.argv[1]):\n'
    '    os._exit(1)\n'
    'os.execvp(sys.argv[2], sys.argv[2:])\n')


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only; returns
    whether it was set)."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return False


def _with_parent_death(cmd: Sequence[str], python: str = sys.executable) -> List[str]:
    """``cmd`` behind the exec wrapper that makes it die with this process (Linux)."""
    if not sys.platform.startswith('linux'):
        return list(cmd)
    return [python, '-c', _DIE_WITH_PARENT, str(os.getpid())] + list(cmd)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the process group of a child we started (it runs in its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            if proc.poll() is not None:
                return
            time.sleep(0.1)


def run_process(cmd: Sequence[str], log_path: str, env: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = None, poll_s: float = 2.0,
                on_poll: Optional[Callable[[float], None]] = None,
                should_stop: Callable[[], bool] = lambda: False,
                cwd: Optional[str] = None, lock: Optional['RunLock'] = None
                ) -> Tuple[int, float, float, bool]:
    """Run ``cmd`` with stdout+stderr to ``log_path``; return ``(returncode, wall_s,
    max_rss_mb, timed_out)``. Raises :class:`Interrupted` (after stopping the child) when
    ``should_stop()`` turns true. The child dies with this process (see the module docstring)
    and, given the run's held ``lock``, holds it too while it lives.

    ``max_rss_mb`` is the peak resident set size of the child (and of its waited-for
    descendants), from ``os.wait4`` of that very child, so parallel runs do not mix.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    start = time.time()
    timed_out = False
    usage = None
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        keep = (lock.fd,) if lock is not None and lock.fd is not None else ()
        proc = subprocess.Popen(_with_parent_death(cmd), stdout=log, stderr=subprocess.STDOUT,
                                env=full_env, cwd=cwd, start_new_session=True, pass_fds=keep)
        if lock is not None:
            lock.note(f'worker {proc.pid}')
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                elapsed = time.time() - start
                if should_stop():
                    raise Interrupted(f'stopped: {cmd[0]}')
                if timeout is not None and elapsed > timeout:
                    timed_out = True
                    _kill_group(proc)
                    pid, status, usage = (os.wait4(proc.pid, 0) if proc.returncode is None
                                          else (proc.pid, 0, None))
                    break
                if on_poll is not None:
                    on_poll(elapsed)
                time.sleep(poll_s)
        except BaseException:
            _kill_group(proc)
            raise
    if proc.returncode is None:
        proc.returncode = os.waitstatus_to_exitcode(status)
    rc = 124 if timed_out else proc.returncode
    rss = usage.ru_maxrss / 1024.0 if usage is not None else float('nan')
    if sys.platform == 'darwin' and usage is not None:  # pragma: no cover
        rss = usage.ru_maxrss / (1024.0 * 1024.0)
    return rc, time.time() - start, rss, timed_out


class RunLock:
    """A run's lock as :func:`run_lock` yields it: true when held; ``fd`` is the locked file."""

    def __init__(self, fd: Optional[int]) -> None:
        self.fd = fd

    def __bool__(self) -> bool:
        return self.fd is not None

    def note(self, text: str) -> None:
        """Record who holds the lock (host, tool pid, ``text``) in the lock file."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f'{socket.gethostname()} {os.getpid()} {text}'.strip().encode()
                      + b'\n', 0)


@contextmanager
def run_lock(run_dir: str) -> Iterator[RunLock]:
    """Hold an exclusive, non-blocking lock on ``<run_dir>.lock``; yields a :class:`RunLock`,
    false when another live process (a tool or a worker it started) holds it. A lock whose holders
    are all dead is free, so it is taken over."""
    os.makedirs(osp.dirname(osp.abspath(run_dir)), exist_ok=True)
    fd = os.open(run_dir.rstrip('/') + '.lock', os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield RunLock(None)
            return
        held = RunLock(fd)
        held.note('')
        yield held
    finally:
        # no LOCK_UN: closing releases the lock unless a worker that could not be stopped still
        # holds its inherited copy, which then keeps other trainers out until it is gone
        os.close(fd)
