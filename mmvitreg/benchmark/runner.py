"""Execute a benchmark: one worker process per (variant, seed), ``jobs`` at once, then the report.

Every run lives in ``<work_dir>/<variant>/seed<k>/``:

* ``config.py``      the complete config of the run: its batch fitted to ``--gpus-per-run`` and
                     its checkpoints bounded (``--batch-policy``, ``--keep-checkpoints``,
                     :mod:`.resources`; the last checkpoint is always kept, for resuming);
* ``started.json``   written before training: the fingerprint of the config and of the slot's
                     runtime (device, threads or GPU models, torch version; an interrupted run
                     with the same fingerprint resumes from its last checkpoint);
* ``run.log``        the captured output of the worker (train, then test);
* ``result.json``    written last: status, metrics, wall time, peak memory, batch, error. With
                     ``status='ok'`` and the current fingerprint the run is finished and never
                     run again; a changed variant or runtime (other fingerprint) runs again;
                     failed runs are retried unless ``retry_failed=False``.

``<work_dir>/<variant>/seed<k>.lock`` is held while the run executes (see :mod:`.launch`). A run
that fails (bad override, crash, missing metric, timeout) is recorded with its error and the
benchmark goes on.
"""
import importlib
import json
import os
import os.path as osp
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import aggregate, logs
from .launch import (VIS_BACKENDS, Interrupted, LaunchOptions, Slot, describe_runtime, make_slots,
                     run_lock, run_process, worker_command)
from .resources import bound_checkpoints, fit_batch
from .spec import BenchmarkSpec, RunSpec, build_run_config, config_fingerprint
from .worker import TEST_MARKER

__all__ = ['execute_run', 'execute_all', 'collect_results', 'write_report', 'run_prepare',
           'run_status', 'run_config', 'runtime_note', 'RESULT_FILE']

RESULT_FILE = 'result.json'
STARTED_FILE = 'started.json'
Printer = Callable[[str], None]
# mmengine resolves `mmdet::`/`mmpretrain::` bases through pkg_resources, which is not thread-safe
_CONFIG_LOCK = threading.Lock()


def _write_json(path: str, data: dict) -> None:
    tmp = f'{path}.{os.getpid()}.{threading.get_ident()}.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def add_vis_backends(cfg, backends: Sequence[str], spec: BenchmarkSpec, run: RunSpec) -> None:
    """Append mmengine's ``*VisBackend`` of each name to the run's visualizer (the local backend
    stays: the report reads its scalars)."""
    if not backends:
        return
    vis = dict(cfg.get('visualizer') or dict(type='Visualizer'))
    entries = list(vis.get('vis_backends') or [dict(type='LocalVisBackend')])
    project = f'mmvitreg-benchmark-{spec.name}'
    for name in backends:
        entry = dict(type=VIS_BACKENDS[name])
        if name == 'wandb':
            entry['init_kwargs'] = dict(project=project, group=run.variant, name=run.key)
        elif name == 'mlflow':
            entry.update(exp_name=project, run_name=run.key)
        if not any(e.get('type') == entry['type'] for e in entries):
            entries.append(entry)
    vis['vis_backends'] = entries
    cfg.visualizer = vis


class _Progress:
    """Prints where a training process is (epoch/iter, loss, last validation) now and then."""

    def __init__(self, tag: str, work_dir: str, cfg, metric: str, printer: Printer,
                 every_s: float):
        self.tag, self.work_dir, self.metric, self.printer = tag, work_dir, metric, printer
        self.every_s = every_s
        train_cfg = cfg.get('train_cfg') or {}
        self.by_epoch = train_cfg.get('by_epoch', 'max_epochs' in train_cfg)
        self.total = train_cfg.get('max_epochs') if self.by_epoch else train_cfg.get('max_iters')
        self.last_print, self.last_state = 0.0, None

    def __call__(self, elapsed: float) -> None:
        now = time.time()
        if now - self.last_print < self.every_s:
            return
        train, val = logs.load_run_scalars(self.work_dir)
        if not train:
            return
        last = train[-1]
        pos = last.get('epoch') if self.by_epoch else last.get('iter')
        text = f"{'epoch' if self.by_epoch else 'iter'} {pos}/{self.total or '?'}"
        if 'loss' in last:
            text += f', loss {last["loss"]:.4f}'
        if val and self.metric in val[-1]:
            text += f', val {self.metric} {val[-1][self.metric]:.2f}'
        if (pos, len(val)) != self.last_state:
            self.printer(f'    {self.tag} training: {text} ({elapsed:.0f} s)')
            self.last_print, self.last_state = now, (pos, len(val))


def _finite_max(*values) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and v == v]
    return max(finite) if finite else float('nan')


def _record_failure(run: RunSpec, error: str, result_path: str, printer: Printer, tag: str,
                    **extra) -> dict:
    res = dict(variant=run.variant, seed=run.seed, status='failed', metrics={}, error=error,
               work_dir=run.work_dir, **extra)
    _write_json(result_path, res)
    printer(f'    {tag} FAILED: {error}')
    return res


def _stage_error(log_path: str, timed_out: bool, timeout: Optional[float]) -> str:
    with open(log_path, errors='replace') as f:
        text = f.read()
    stage = 'test' if TEST_MARKER in text else 'train'
    if timed_out:
        return f'{stage}: timed out after {timeout:.0f} s'
    return f'{stage}: ' + logs.extract_error(text.split(TEST_MARKER)[-1] if stage == 'test'
                                              else text)


def run_config(spec: BenchmarkSpec, run: RunSpec, opts: Optional[LaunchOptions] = None,
               extra_options: Optional[dict] = None) -> Tuple[object, dict]:
    """``(config, batch)``: the run's config with its batch fitted to ``opts.gpus_per_run``
    processes by ``opts.batch_policy`` (:func:`.resources.fit_batch`), and that batch."""
    cfg = build_run_config(spec, spec.variant(run.variant), run.seed, extra_options)
    batch = fit_batch(cfg, opts.gpus_per_run if opts else 1,
                      opts.batch_policy if opts else 'keep-total')
    return cfg, batch


def _stale_reason(previous: dict, runtime: Optional[dict]) -> str:
    """Why a recorded run's fingerprint is not the current one (``runtime=None``: not known
    here, so the config)."""
    if runtime is not None and previous.get('runtime') != runtime:
        return (f"ran on {describe_runtime(previous.get('runtime'))}, now "
                f'{describe_runtime(runtime)}')
    return 'config changed since the recorded run'


def run_status(spec: BenchmarkSpec, run: RunSpec, extra_options: Optional[dict] = None,
               opts: Optional[LaunchOptions] = None, runtime: Optional[dict] = None) -> str:
    """What rerunning with ``opts`` (its batch fitting) on a slot of ``runtime`` would do with
    ``run``: 'ok', 'failed', 'to run', why it runs again (config or runtime changed),
    'interrupted: will resume'. ``runtime=None``: where it will run is not known here (e.g.
    GPU runs planned on a machine without them), so a recorded run is judged on its config
    alone (as if it ran there again)."""
    res = read_json(osp.join(run.work_dir, RESULT_FILE))
    started = read_json(osp.join(run.work_dir, STARTED_FILE))
    try:
        cfg = run_config(spec, run, opts, extra_options)[0]
    except Exception as exc:  # shown; the real run records it as failed
        return f'config error: {exc}'

    def current(record: dict) -> bool:
        where = record.get('runtime') if runtime is None else runtime
        return record.get('fingerprint') == config_fingerprint(cfg, where)

    if res and current(res):
        return res['status']
    if res:
        return f'{_stale_reason(res, runtime)}: will run again'
    if started and current(started) and logs.find_checkpoint(run.work_dir):
        return 'interrupted: will resume'
    return 'to run'


def execute_run(spec: BenchmarkSpec, run: RunSpec, opts: LaunchOptions, slot: Slot,
                extra_options: Optional[dict] = None, retry_failed: bool = True,
                printer: Printer = print, tag: str = '',
                should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Train and test one (variant, seed) unless it is finished or running elsewhere; return
    its result (``skipped=True``: a finished result was reused; ``status='busy'``: another
    process holds the run's lock)."""
    tag = tag or run.key
    os.makedirs(run.work_dir, exist_ok=True)
    result_path = osp.join(run.work_dir, RESULT_FILE)
    with run_lock(run.work_dir) as mine:
        if not mine:
            printer(f'    {tag}: running in another process, skipped')
            return dict(variant=run.variant, seed=run.seed, status='busy', skipped=True)
        try:
            with _CONFIG_LOCK:
                cfg, batch = run_config(spec, run, opts, extra_options)
            fingerprint = config_fingerprint(cfg, slot.runtime)
        except Exception as exc:  # a bad override or config is a failed run, not a crash
            from mmvitreg.utils.cli import describe_error
            return _record_failure(run, f'config: {describe_error(exc)}', result_path,
                                   printer, tag)
        previous = read_json(result_path)
        if previous and previous.get('fingerprint') == fingerprint:
            if previous.get('status') == 'ok' or not retry_failed:
                return dict(previous, skipped=True)
        elif previous:
            printer(f'    {tag}: {_stale_reason(previous, slot.runtime)}, running it again')
        started = read_json(osp.join(run.work_dir, STARTED_FILE))
        resume = bool(started and started.get('fingerprint') == fingerprint and
                      (previous is None or previous.get('status') != 'ok') and
                      logs.find_checkpoint(run.work_dir) is not None)
        if resume:
            printer(f'    {tag}: resuming the interrupted run from its last checkpoint')
        else:
            shutil.rmtree(run.work_dir, ignore_errors=True)
            os.makedirs(run.work_dir)
        add_vis_backends(cfg, opts.vis_backends, spec, run)  # not part of the fingerprint,
        bound_checkpoints(cfg, opts.keep_checkpoints)  # nor is retention: same results
        cfg_path = osp.join(run.work_dir, 'config.py')
        with _CONFIG_LOCK:
            cfg.dump(cfg_path)
        _write_json(osp.join(run.work_dir, STARTED_FILE),
                    dict(fingerprint=fingerprint, variant=run.variant, seed=run.seed,
                         slot=slot.label, runtime=slot.runtime,
                         started=time.strftime('%Y-%m-%d %H:%M:%S')))
        base = dict(fingerprint=fingerprint, config=cfg_path, slot=slot.label, batch=batch,
                    runtime=slot.runtime)
        cmd = worker_command(cfg_path, run.work_dir, opts, slot, resume,
                             spec.test_checkpoint if spec.test else None)
        env = dict(slot.env, **opts.env)
        log_path = osp.join(run.work_dir, 'run.log')
        progress = _Progress(tag, run.work_dir, cfg, spec.primary_metric, printer,
                             opts.progress_every_s)
        rc, wall, rss, timed_out = run_process(cmd, log_path, env=env, timeout=opts.timeout,
                                               poll_s=opts.poll_s, on_poll=progress,
                                               should_stop=should_stop, lock=mine)
        peaks = logs.read_peak_memory(run.work_dir)
        mem = dict(peak_rss_mb=_finite_max(rss, peaks.get('peak_rss_mb')),
                   peak_cuda_mb=peaks.get('peak_cuda_mb'))
        if rc != 0:
            return _record_failure(run, _stage_error(log_path, timed_out, opts.timeout),
                                   result_path, printer, tag, wall_s=wall, **mem, **base)
        if spec.test:
            metrics, source = logs.read_test_metrics(osp.join(run.work_dir, 'test')) or {}, 'test'
        else:
            metrics = logs.last_val_metrics(logs.load_run_scalars(run.work_dir)[1]) or {}
            source = 'last validation'
        missing = [m for m in spec.metrics if m not in metrics]
        if missing:
            return _record_failure(
                run, f'metric(s) {missing} not in the {source} results; available: '
                f'{sorted(metrics)}', result_path, printer, tag, wall_s=wall, **mem, **base)
        res = dict(variant=run.variant, seed=run.seed, status='ok', metrics=metrics, wall_s=wall,
                   error='', work_dir=run.work_dir, **mem, **base)
        _write_json(result_path, res)
        shown = ', '.join(f'{m}={metrics[m]:.4g}' for m in spec.metrics)
        printer(f'    {tag} done in {wall:.0f} s ({slot.label}): {shown}')
        return res


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 60}:{seconds % 60:02d}'


def execute_all(items: Sequence[Tuple[BenchmarkSpec, RunSpec]], opts: LaunchOptions,
                extra_options: Optional[dict] = None, retry_failed: bool = True,
                printer: Printer = print,
                on_done: Optional[Callable[[BenchmarkSpec, dict], None]] = None) -> Dict[str, int]:
    """Run every ``(spec, run)`` with ``opts.jobs`` at once (in the given order); return counts
    of ``ok``/``failed``/``skipped`` runs. Ctrl-C stops the running processes (their runs stay
    resumable) and re-raises ``KeyboardInterrupt``."""
    slots = make_slots(opts)
    free = list(slots)
    lock = threading.Lock()
    stop = threading.Event()
    counts = dict(ok=0, failed=0, skipped=0)
    durations: List[float] = []
    start = time.time()

    def say(line: str) -> None:
        with lock:
            printer(line)

    def work(i: int, spec: BenchmarkSpec, run: RunSpec) -> None:
        if stop.is_set():
            return
        with lock:
            slot = free.pop(0)
            eta = ''
            if durations:
                left = (len(items) - i + 1) * sum(durations) / len(durations) / len(slots)
                eta = f', about {_fmt_s(left)} left'
        tag = f'[{i}/{len(items)} {run.key}]'
        say(f'{tag} (elapsed {_fmt_s(time.time() - start)}{eta}, {slot.label})')
        t0 = time.time()
        try:
            res = execute_run(spec, run, opts, slot, extra_options, retry_failed, say, tag,
                              stop.is_set)
        finally:
            with lock:
                free.append(slot)
        with lock:
            if res.get('skipped'):
                counts['skipped'] += 1
                if res['status'] != 'busy':
                    printer(f"    {tag} finished earlier ({res['status']}), skipped")
            else:
                durations.append(time.time() - t0)
                counts['ok' if res['status'] == 'ok' else 'failed'] += 1
            if on_done is not None:
                on_done(spec, res)

    with _deferred_sigint() as interrupted, ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = [pool.submit(work, i, spec, run) for i, (spec, run) in enumerate(items, 1)]
        try:
            pending = set(futures)
            while pending:
                signum = interrupted()
                if signum:
                    raise Stopped(signum)
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in finished:
                    exc = f.exception()
                    if exc is not None and not isinstance(exc, Interrupted):
                        raise exc
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    return counts


class Stopped(KeyboardInterrupt):
    """The sweep was stopped by a signal (``signum``): its workers are stopped, runs resumable."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGHUP')
                      if hasattr(signal, name))


@contextmanager
def _deferred_sigint() -> Iterator[Callable[[], bool]]:
    """While running, Ctrl-C, ``SIGTERM`` and ``SIGHUP`` (a closed SSH session) only set a flag
    that the polling loop turns into :class:`Stopped` (a ``KeyboardInterrupt``) at a safe point,
    which stops every worker's process group: raised asynchronously inside
    ``concurrent.futures`` it can leave a future's lock held, and the pool's shutdown then waits
    forever."""
    flag: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: flag.append(signum))
                for sig in _STOP_SIGNALS}
    try:
        yield lambda: flag[0] if flag else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_prepare(spec: BenchmarkSpec, printer: Printer = print) -> None:
    """Call the preset's ``prepare`` steps (e.g. write a generated dataset) once; a step with
    ``skip_if_exists=path`` is skipped when that path exists."""
    for step in spec.prepare:
        marker = step.get('skip_if_exists')
        if marker and osp.exists(marker):
            continue
        module, _, name = step['fn'].rpartition('.')
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImportError(f"prepare step fn {step['fn']!r} can not be imported: {exc}") from exc
        kwargs = step.get('kwargs') or {}
        printer(f"preparing: {step['fn']}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
        fn(**kwargs)


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
            res = read_json(osp.join(work_dir, name, f'seed{seed}', RESULT_FILE))
            if res is not None:
                res.pop('skipped', None)
                results.append(res)
    return names, results


def run_curves(work_dir: str, variants: Sequence[str], seeds: Sequence[int], metric: str):
    """``{variant: {'loss': [(x, y) per seed], 'val': [...], 'unit': 'epoch'|'iteration'}}``."""
    out = {}
    for name in variants:
        c = {'loss': [], 'val': [], 'unit': 'epoch'}
        for seed in seeds:
            train, val = logs.load_run_scalars(osp.join(work_dir, name, f'seed{seed}'))
            by_epoch = bool(train) and all('epoch' in r for r in train)
            c['unit'] = 'epoch' if by_epoch or not train else 'iteration'
            c['loss'].append(logs.epoch_curve(train, 'loss') if by_epoch
                             else logs.curve(train, 'loss'))
            c['val'].append(logs.curve(val, metric))
        out[name] = c
    return out


def runtime_note(results: Sequence[dict]) -> str:
    """Where the finished runs ran (device, threads or GPUs, torch), flagged when they differ:
    runs from different environments do not give the same numbers for the same seed."""
    seen = sorted({describe_runtime(r.get('runtime')) for r in results if r.get('status') == 'ok'})
    if not seen:
        return ''
    if len(seen) == 1:
        return f'Every run: {seen[0]}.'
    return (f'Warning: the runs come from {len(seen)} environments ({"; ".join(seen)}), so equal '
            'seeds do not give equal numbers: rerun the variants with one setting.')


def write_report(spec: BenchmarkSpec, work_dir: str, all_variants: Sequence[str] = (),
                 notes: Sequence[str] = (), plots: bool = True) -> Dict[str, str]:
    """Write ``results.md``, ``summary.csv``, ``runs.csv``, ``results.json`` and the plots
    (``forest.png``, ``metrics.png``, ``curves.png``) into ``work_dir``; return
    ``{'markdown': text, <kind>: path, ...}``."""
    names, results = collect_results(spec, work_dir, all_variants)
    baseline = spec.baseline if spec.baseline in names else None
    summary = aggregate.summarize(results, names, spec.metrics, baseline, spec.baselines(),
                                  spec.higher_is_better, spec.alpha, spec.questions())
    title = f'Benchmark {spec.name}'
    where = runtime_note(results)
    md = aggregate.to_markdown(summary, results, spec.metrics, baseline, title=title,
                               notes=notes, alpha=spec.alpha, preamble=[where] if where else ())
    paths = dict(markdown_file=osp.join(work_dir, 'results.md'),
                 summary_csv=osp.join(work_dir, 'summary.csv'),
                 runs_csv=osp.join(work_dir, 'runs.csv'), json=osp.join(work_dir, 'results.json'))
    os.makedirs(work_dir, exist_ok=True)
    with open(paths['markdown_file'], 'w') as f:
        f.write(md)
    with open(paths['summary_csv'], 'w') as f:
        f.write(aggregate.to_csv(summary, aggregate.summary_columns(spec.metrics)))
    rows = [dict(r, **{m: (r.get('metrics') or {}).get(m) for m in spec.metrics})
            for r in results]
    with open(paths['runs_csv'], 'w') as f:
        f.write(aggregate.to_csv(rows, aggregate.run_columns(spec.metrics)))
    _write_json(paths['json'], dict(preset=spec.path, metrics=spec.metrics, baseline=baseline,
                                    alpha=spec.alpha, higher_is_better=spec.higher_is_better,
                                    summary=summary, runs=results))
    if plots and results:
        try:  # a plotting problem must not cost the results
            from . import plots as P
            paths['forest_plot'] = P.plot_forest(summary, spec.metrics,
                                                 osp.join(work_dir, 'forest.png'), title=title)
            paths['metrics_plot'] = P.plot_metrics(summary, results, spec.metrics,
                                                   osp.join(work_dir, 'metrics.png'), title=title)
            paths['curves_plot'] = P.plot_curves(
                run_curves(work_dir, names, spec.seeds, spec.primary_metric),
                osp.join(work_dir, 'curves.png'), spec.primary_metric, title=title)
        except Exception as exc:  # pragma: no cover - depends on the matplotlib install
            print(f'warning: plots not written: {type(exc).__name__}: {exc}', file=sys.stderr)
    paths['markdown'] = md
    return paths
