"""Execute a benchmark: one isolated ``tools/train.py`` + ``tools/test.py`` subprocess pair per
(variant, seed), then the report (tables, csv, plots).

Every run lives in ``<work_dir>/<variant>/seed<k>/``:

* ``config.py``      the complete config of the run (what was trained; mmengine rewrites it with
                     the work dir filled in);
* ``started.json``   written before training: the config fingerprint (an interrupted run with the
                     same fingerprint resumes from its last checkpoint);
* ``train.log`` / ``test.log``  the captured output of the two processes;
* ``result.json``    written last: status, metrics, wall time, peak memory, error. Its presence
                     with ``status='ok'`` and the current fingerprint marks the run as finished, so
                     rerunning the tool skips it. A changed variant (different fingerprint) is run
                     again; failed runs are retried unless ``retry_failed=False``.

A run that fails (bad override, crash, missing metric, timeout) is recorded with its error and
the benchmark goes on with the next run.
"""
import importlib
import json
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import aggregate, logs
from .spec import (REPO_ROOT, BenchmarkSpec, RunSpec, build_run_config, config_fingerprint,
                   plan_runs)

__all__ = ['LaunchOptions', 'run_process', 'train_command', 'test_command', 'execute_run',
           'run_benchmark', 'collect_results', 'write_report', 'run_prepare']

RESULT_FILE = 'result.json'
STARTED_FILE = 'started.json'


@dataclass
class LaunchOptions:
    """How each run's processes are started.

    ``launcher='none'``: ``python tools/train.py`` (one process, CPU or one GPU);
    ``'pytorch'``: ``tools/dist_train.sh`` / ``dist_test.sh`` with ``gpus`` processes (torchrun);
    ``'slurm'``: ``tools/slurm_train.sh`` on ``partition`` with ``gpus`` GPUs, test through
    ``srun`` with one task.
    """
    launcher: str = 'none'
    gpus: int = 1
    partition: Optional[str] = None
    python: str = sys.executable
    tools_dir: str = osp.join(REPO_ROOT, 'tools')
    timeout: Optional[float] = None  # seconds per process
    poll_s: float = 2.0
    progress_every_s: float = 15.0
    env: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.launcher not in ('none', 'pytorch', 'slurm'):
            raise ValueError(f"launcher must be 'none', 'pytorch' or 'slurm', got {self.launcher!r}")
        if self.gpus < 1:
            raise ValueError(f'gpus must be >= 1, got {self.gpus}')
        if self.launcher == 'slurm' and not self.partition:
            raise ValueError('--launcher slurm needs --partition, the slurm partition to submit to')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_command(cfg_path: str, work_dir: str, opts: LaunchOptions, resume: bool,
                  job_name: str = 'bench') -> Tuple[List[str], Dict[str, str]]:
    """Command line and extra environment of one training process."""
    extra = ['--resume'] if resume else []
    env = {'PYTHON': opts.python}
    if opts.launcher == 'pytorch':
        env['PORT'] = str(_free_port())
        return (['bash', osp.join(opts.tools_dir, 'dist_train.sh'), cfg_path, str(opts.gpus),
                 '--work-dir', work_dir] + extra, env)
    if opts.launcher == 'slurm':
        env['GPUS'] = str(opts.gpus)
        env['GPUS_PER_NODE'] = str(min(opts.gpus, 8))
        return (['bash', osp.join(opts.tools_dir, 'slurm_train.sh'), opts.partition, job_name,
                 cfg_path, work_dir] + extra, env)
    return [opts.python, osp.join(opts.tools_dir, 'train.py'), cfg_path, '--work-dir',
            work_dir] + extra, env


def test_command(cfg_path: str, checkpoint: str, work_dir: str, opts: LaunchOptions,
                 job_name: str = 'bench') -> Tuple[List[str], Dict[str, str]]:
    """Command line and extra environment of one test process."""
    env = {'PYTHON': opts.python}
    if opts.launcher == 'pytorch':
        env['PORT'] = str(_free_port())
        return (['bash', osp.join(opts.tools_dir, 'dist_test.sh'), cfg_path, checkpoint,
                 str(opts.gpus), '--work-dir', work_dir], env)
    if opts.launcher == 'slurm':
        return (['srun', '-p', opts.partition, f'--job-name={job_name}', '--gres=gpu:1',
                 '--ntasks=1', '--kill-on-bad-exit=1', opts.python, '-u',
                 osp.join(opts.tools_dir, 'test.py'), cfg_path, checkpoint, '--work-dir',
                 work_dir, '--launcher', 'slurm'], env)
    return [opts.python, osp.join(opts.tools_dir, 'test.py'), cfg_path, checkpoint,
            '--work-dir', work_dir], env


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
                cwd: Optional[str] = None) -> Tuple[int, float, float, bool]:
    """Run ``cmd`` with stdout+stderr to ``log_path``; return ``(returncode, wall_s,
    max_rss_mb, timed_out)``.

    ``max_rss_mb`` is the peak resident set size of the child (and of its waited-for
    descendants), from ``os.wait4`` of that very child, so runs do not mix.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    start = time.time()
    timed_out = False
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                elapsed = time.time() - start
                if timeout is not None and elapsed > timeout:
                    timed_out = True
                    _kill_group(proc)
                    pid, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None \
                        else (proc.pid, 0, None)
                    break
                if on_poll is not None:
                    on_poll(elapsed)
                time.sleep(poll_s)
        except BaseException:
            _kill_group(proc)
            raise
    if proc.returncode is None:
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc
    rc = 124 if timed_out else proc.returncode
    rss = usage.ru_maxrss / 1024.0 if usage is not None else float('nan')
    if sys.platform == 'darwin' and usage is not None:
        rss = usage.ru_maxrss / (1024.0 * 1024.0)
    return rc, time.time() - start, rss, timed_out


def _write_json(path: str, data: dict) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _clear_dir(path: str) -> None:
    """Empty a run dir (only the run's own folder) before a fresh start."""
    if osp.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)


class _Progress:
    """Prints where a training process is (epoch/iter, loss, last validation) every few seconds."""

    def __init__(self, tag: str, work_dir: str, cfg, metric: str, printer: Callable[[str], None],
                 every_s: float):
        self.tag, self.work_dir, self.metric, self.printer = tag, work_dir, metric, printer
        self.every_s = every_s
        train_cfg = cfg.get('train_cfg') or {}
        self.by_epoch = train_cfg.get('by_epoch', 'max_epochs' in train_cfg)
        self.total = train_cfg.get('max_epochs') if self.by_epoch else train_cfg.get('max_iters')
        self.last_print = 0.0
        self.last_state = None
        self._size = -1
        self._records: List[dict] = []

    def _latest(self) -> List[dict]:
        dirs = logs.log_dirs(self.work_dir)
        if not dirs:
            return []
        path = osp.join(dirs[-1], 'vis_data', 'scalars.json')
        size = osp.getsize(path) if osp.isfile(path) else -1
        if size != self._size:
            self._size = size
            self._records = logs.read_scalars(path)
        return self._records

    def __call__(self, elapsed: float) -> None:
        train, val = logs.split_train_val(self._latest())
        if not train:
            state, text = (None, len(val)), 'starting'
        else:
            last = train[-1]
            pos = last.get('epoch') if self.by_epoch else last.get('iter')
            unit = 'epoch' if self.by_epoch else 'iter'
            text = f'{unit} {pos}/{self.total or "?"}, iter {last.get("iter", "?")}'
            if 'loss' in last:
                text += f', loss {last["loss"]:.4f}'
            if val and self.metric in val[-1]:
                text += f', val {self.metric} {val[-1][self.metric]:.2f}'
            state = (pos, len(val))
        now = time.time()
        new_val = self.last_state is not None and state[1] != self.last_state[1]
        if state != self.last_state and (now - self.last_print >= self.every_s or new_val):
            self.printer(f'    {self.tag} training: {text} ({elapsed:.0f} s)')
            self.last_print, self.last_state = now, state


def _max(*values: Optional[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and v == v]
    return max(finite) if finite else float('nan')


def _failed(run: RunSpec, error: str, **extra) -> dict:
    res = dict(variant=run.variant, seed=run.seed, status='failed', metrics={}, error=error,
               work_dir=run.work_dir)
    res.update(extra)
    return res


def _record_failure(run: RunSpec, error: str, result_path: str, printer: Callable[[str], None],
                    tag: str, label: str = '', **extra) -> dict:
    """Build the failed result, write it next to the run and print one ``FAILED`` line."""
    res = _failed(run, error, **extra)
    _write_json(result_path, res)
    printer(f'    {tag} FAILED{label}: {error}')
    return res


def _stage_error(log_path: str, stage: str, timed_out: bool, timeout: float) -> str:
    """One-line reason a train/test subprocess failed, read from its log."""
    if timed_out:
        return f'{"" if stage == "train" else stage + " "}timed out after {timeout:.0f} s'
    with open(log_path, errors='replace') as f:
        return f'{stage}: ' + logs.extract_error(f.read())


def execute_run(spec: BenchmarkSpec, run: RunSpec, opts: LaunchOptions,
                extra_options: Optional[dict] = None, retry_failed: bool = True,
                printer: Callable[[str], None] = print, tag: str = '') -> dict:
    """Train and test one (variant, seed) unless it is already finished; return its result dict
    (with ``skipped=True`` when a finished result was reused)."""
    tag = tag or run.key
    os.makedirs(run.work_dir, exist_ok=True)
    result_path = osp.join(run.work_dir, RESULT_FILE)
    try:
        cfg = build_run_config(spec, spec.variant(run.variant), run.seed, extra_options)
        fingerprint = config_fingerprint(cfg)
    except Exception as exc:  # a bad override or config is a failed run, not a crash
        from mmvitreg.utils.cli import describe_error
        return _record_failure(run, f'config: {describe_error(exc)}', result_path, printer, tag,
                               ' (config)')
    previous = _read_json(result_path)
    if previous and previous.get('fingerprint') == fingerprint:
        if previous.get('status') == 'ok' or not retry_failed:
            previous['skipped'] = True
            return previous
    elif previous:
        printer(f'    {tag}: config changed since the recorded run, running it again')
    started = _read_json(osp.join(run.work_dir, STARTED_FILE))
    resume = bool(started and started.get('fingerprint') == fingerprint and
                  (previous is None or previous.get('status') != 'ok') and
                  logs.find_checkpoint(run.work_dir) is not None)
    if resume:
        printer(f'    {tag}: resuming the interrupted run from its last checkpoint')
    else:
        _clear_dir(run.work_dir)
    cfg_path = osp.join(run.work_dir, 'config.py')
    cfg.dump(cfg_path)
    _write_json(osp.join(run.work_dir, STARTED_FILE),
                dict(fingerprint=fingerprint, variant=run.variant, seed=run.seed,
                     started=time.strftime('%Y-%m-%d %H:%M:%S')))
    base = dict(fingerprint=fingerprint, config=cfg_path)
    job = f'{spec.name}-{run.variant}-s{run.seed}'

    cmd, env = train_command(cfg_path, run.work_dir, opts, resume, job)
    env.update(opts.env)
    progress = _Progress(tag, run.work_dir, cfg, spec.primary_metric, printer,
                         opts.progress_every_s)
    rc, train_s, train_rss, timed_out = run_process(
        cmd, osp.join(run.work_dir, 'train.log'), env=env, timeout=opts.timeout,
        poll_s=opts.poll_s, on_poll=progress)
    peaks = logs.read_peak_memory(run.work_dir)
    mem = dict(peak_rss_mb=_max(train_rss, peaks.get('peak_rss_mb')),
               peak_cuda_mb=peaks.get('peak_cuda_mb'))
    if rc != 0:
        error = _stage_error(osp.join(run.work_dir, 'train.log'), 'train', timed_out, opts.timeout)
        return _record_failure(run, error, result_path, printer, tag, wall_s=train_s, **mem,
                               **base)

    wall = train_s
    if spec.test:
        ckpt = logs.find_checkpoint(run.work_dir, spec.test_checkpoint)
        if ckpt is None:
            return _record_failure(run, 'test: training wrote no checkpoint', result_path,
                                   printer, tag, wall_s=wall, **mem, **base)
        printer(f'    {tag} testing {osp.basename(ckpt)}')
        test_dir = osp.join(run.work_dir, 'test')
        cmd, env = test_command(cfg_path, ckpt, test_dir, opts, job)
        env.update(opts.env)
        rc, test_s, test_rss, timed_out = run_process(
            cmd, osp.join(run.work_dir, 'test.log'), env=env, timeout=opts.timeout,
            poll_s=min(opts.poll_s, 1.0))
        wall += test_s
        peaks = logs.read_peak_memory(run.work_dir)
        mem = dict(peak_rss_mb=_max(train_rss, test_rss, peaks.get('peak_rss_mb')),
                   peak_cuda_mb=peaks.get('peak_cuda_mb'))
        if rc != 0:
            error = _stage_error(osp.join(run.work_dir, 'test.log'), 'test', timed_out,
                                 opts.timeout)
            return _record_failure(run, error, result_path, printer, tag, wall_s=wall, **mem,
                                   **base)
        metrics = logs.read_test_metrics(test_dir) or {}
        source = 'test'
    else:
        metrics = logs.last_val_metrics(logs.load_run_scalars(run.work_dir)[1]) or {}
        source = 'last validation'
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        return _record_failure(
            run, f'metric(s) {missing} not in the {source} results; available: '
            f'{sorted(metrics)}', result_path, printer, tag, metrics=metrics, wall_s=wall, **mem,
            **base)
    res = dict(variant=run.variant, seed=run.seed, status='ok', metrics=metrics, wall_s=wall,
               train_s=train_s, error='', work_dir=run.work_dir, **mem, **base)
    _write_json(result_path, res)
    shown = ', '.join(f'{m}={metrics[m]:.4g}' for m in spec.metrics)
    printer(f'    {tag} done in {wall:.0f} s: {shown}')
    return res


def run_prepare(spec: BenchmarkSpec, printer: Callable[[str], None] = print) -> None:
    """Call the preset's ``prepare`` steps (e.g. write a generated dataset) once.

    A step ``dict(fn='pkg.mod.func', kwargs=dict(...), skip_if_exists='path')`` is skipped when
    ``skip_if_exists`` exists already.
    """
    for step in spec.prepare:
        marker = step.get('skip_if_exists')
        if marker and osp.exists(marker):
            continue
        module, _, name = step['fn'].rpartition('.')
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImportError(f"prepare step fn {step['fn']!r} can not be imported: {exc}") from exc
        printer(f"preparing: {step['fn']}({', '.join(f'{k}={v!r}' for k, v in (step.get('kwargs') or {}).items())})")
        fn(**(step.get('kwargs') or {}))


def collect_results(spec: BenchmarkSpec, work_dir: str,
                    all_variants: Sequence[str] = ()) -> Tuple[List[str], List[dict]]:
    """``(variants, results)`` found on disk for the preset's seeds: the selected variants plus
    any other variant of ``all_variants`` that has results (so partial reruns keep the table)."""
    names = [v.name for v in spec.variants]
    for name in all_variants:
        if name not in names and any(osp.isfile(osp.join(work_dir, name, f'seed{s}', RESULT_FILE))
                                     for s in spec.seeds):
            names.append(name)
    order = {n: i for i, n in enumerate(all_variants or names)}
    names.sort(key=lambda n: order.get(n, len(order)))
    results = []
    for name in names:
        for seed in spec.seeds:
            res = _read_json(osp.join(work_dir, name, f'seed{seed}', RESULT_FILE))
            if res is not None:
                res.pop('skipped', None)
                results.append(res)
    return names, results


def _curves(work_dir: str, variants: Sequence[str], seeds: Sequence[int], metric: str):
    out = {}
    for name in variants:
        c = {'loss': [], 'val': []}
        for seed in seeds:
            train, val = logs.load_run_scalars(osp.join(work_dir, name, f'seed{seed}'))
            c['loss'].append(logs.curve(train, 'loss'))
            c['val'].append(logs.curve(val, metric))
        out[name] = c
    return out


def write_report(spec: BenchmarkSpec, work_dir: str, all_variants: Sequence[str] = (),
                 notes: Sequence[str] = (), plots: bool = True) -> Dict[str, str]:
    """Write ``results.md``, ``summary.csv``, ``runs.csv``, ``results.json`` and the plots into
    ``work_dir``; return ``{'markdown': text, <kind>: path, ...}``."""
    names, results = collect_results(spec, work_dir, all_variants)
    baseline = spec.baseline if spec.baseline in names else None
    summary = aggregate.summarize(results, names, spec.metrics, baseline, spec.baselines())
    title = f'Benchmark {spec.name}'
    md = aggregate.to_markdown(summary, results, spec.metrics, baseline, title=title, notes=notes)
    paths = dict(markdown_file=osp.join(work_dir, 'results.md'),
                 summary_csv=osp.join(work_dir, 'summary.csv'),
                 runs_csv=osp.join(work_dir, 'runs.csv'),
                 json=osp.join(work_dir, 'results.json'))
    with open(paths['markdown_file'], 'w') as f:
        f.write(md)
    with open(paths['summary_csv'], 'w') as f:
        f.write(aggregate.to_csv(summary, aggregate.summary_columns(spec.metrics)))
    rows = [dict(r, **{m: (r.get('metrics') or {}).get(m) for m in spec.metrics})
            for r in results]
    with open(paths['runs_csv'], 'w') as f:
        f.write(aggregate.to_csv(rows, aggregate.run_columns(spec.metrics)))
    _write_json(paths['json'], dict(preset=spec.path, metrics=spec.metrics, baseline=baseline,
                                    summary=summary, runs=results))
    if plots and results:
        try:  # a plotting problem must not cost the results
            from . import plots as P
            paths['metrics_plot'] = P.plot_metrics(summary, results, spec.metrics,
                                                   osp.join(work_dir, 'metrics.png'), baseline,
                                                   title=title)
            paths['curves_plot'] = P.plot_curves(
                _curves(work_dir, names, spec.seeds, spec.primary_metric),
                osp.join(work_dir, 'curves.png'), spec.primary_metric, title=title)
        except Exception as exc:  # pragma: no cover - depends on the matplotlib install
            print(f'warning: plots not written: {type(exc).__name__}: {exc}', file=sys.stderr)
    paths['markdown'] = md
    return paths


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 60}:{seconds % 60:02d}'


def _print(line: str) -> None:
    print(line, flush=True)  # progress must show up promptly when the output is piped


def run_benchmark(spec: BenchmarkSpec, work_dir: str, opts: LaunchOptions,
                  extra_options: Optional[dict] = None, retry_failed: bool = True,
                  all_variants: Sequence[str] = (), printer: Callable[[str], None] = _print,
                  plots: bool = True) -> Dict[str, str]:
    """Run every (variant, seed) of ``spec`` in turn (skipping finished ones), updating the
    report after each run; return :func:`write_report`'s paths."""
    os.makedirs(work_dir, exist_ok=True)
    run_prepare(spec, printer)
    runs = plan_runs(spec, work_dir)
    start = time.time()
    durations: List[float] = []
    counts = dict(ok=0, failed=0, skipped=0)
    for i, run in enumerate(runs, 1):
        tag = f'[{i}/{len(runs)} {run.variant} seed{run.seed}]'
        eta = ''
        if durations:
            left = (len(runs) - i + 1) * sum(durations) / len(durations)
            eta = f', about {_fmt_s(left)} left'
        printer(f'{tag} (elapsed {_fmt_s(time.time() - start)}{eta})')
        t0 = time.time()
        res = execute_run(spec, run, opts, extra_options, retry_failed, printer, tag)
        if res.get('skipped'):
            counts['skipped'] += 1
            printer(f"    {tag} finished earlier ({res['status']}), skipped")
        else:
            durations.append(time.time() - t0)
            counts[res['status'] if res['status'] in counts else 'failed'] += 1
        write_report(spec, work_dir, all_variants, plots=False)
    notes = [f'{len(runs)} runs: {counts["ok"]} ran ok, {counts["failed"]} failed, '
             f'{counts["skipped"]} finished earlier (skipped); total time {_fmt_s(time.time() - start)}.']
    return write_report(spec, work_dir, all_variants, notes=notes, plots=plots)
