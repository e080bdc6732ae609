"""Command line of the regularizer benchmark (``python -m mmvitreg.benchmark`` or
``tools/benchmark_regularizers.py``): run a preset or a suite and print the tables.

Examples::

    python -m mmvitreg.benchmark configs/benchmark/digits_regularizers.py --jobs 2
    python -m mmvitreg.benchmark PRESET --variants baseline dropkey --seeds 0 1 2
    python -m mmvitreg.benchmark configs/benchmark/suite_digits_cpu.py --jobs 2
    python -m mmvitreg.benchmark PRESET --jobs 8                      # 8 GPUs, one run each
    python -m mmvitreg.benchmark PRESET --jobs 2 --gpus-per-run 4     # torchrun x4 per run
    python -m mmvitreg.benchmark PRESET --gpus-per-run 8 --dry-run    # runs, batch, GPU-h, disk
    python -m mmvitreg.benchmark PRESET --slurm gpu --jobs 2 --gpus-per-run 8 --submit  # array
    python -m mmvitreg.benchmark PRESET --vis-backend tensorboard    # also log to TensorBoard
    python -m mmvitreg.benchmark PRESET --report-only                # tables/plots from disk

CPU runs use one thread each (``--threads-per-run``), however many run at once (``--jobs``), so
the same command gives the same table; the thread count (or the GPU models) and the torch
version are part of each run's fingerprint.

Rerunning the same command skips finished runs and resumes an interrupted one; failed runs are
retried. Outputs go to ``--work-dir`` (default ``work_dirs/benchmark/<name>``). Every run keeps
its preset's total batch and LR on any ``--gpus-per-run`` (``--batch-policy``) and its last
checkpoint only (``--keep-checkpoints``); see :mod:`.resources`.
"""
import argparse
import os.path as osp
import shlex
import signal
import sys
import warnings
from typing import List, Optional, Tuple

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmvitreg.utils.cli import CLIError, DictAction, one_line_errors  # noqa: E402

__all__ = ['main', 'parse_args']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m mmvitreg.benchmark',
        description='Benchmark regularizers: variants x seeds of a preset (or of every task of a '
        'suite) -> paired statistics, tables and plots',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='benchmark preset or suite (an mmengine config with a '
                        '`benchmark` or `suite` dict)')
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/benchmark/<name>)')
    parser.add_argument('--variants', nargs='+', help='run only these variants (in this order)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seeds', nargs='+', type=int, help='seeds (default: the preset\'s)')
    seeds.add_argument('--repeats', type=int, help='use seeds 0 .. N-1')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every run, after the preset and the variant')
    parser.add_argument('--jobs', type=int, help='runs at once, default 1 (GPUs: one slot of '
                        '--gpus-per-run devices each; CPU: --threads-per-run threads each; '
                        'with --slurm: the array\'s limit %%N, default none)')
    parser.add_argument('--threads-per-run', type=int, help='threads of each run (CPU default: '
                        '1, so the numbers do not depend on --jobs; part of a run\'s fingerprint; '
                        'GPU default: the cores split between the processes)')
    parser.add_argument('--gpus-per-run', type=int, default=1,
                        help='GPUs (torchrun processes) per run')
    parser.add_argument('--batch-policy', choices=['keep-total', 'scale-lr'],
                        default='keep-total', help='keep-total: each run keeps its preset\'s '
                        'total batch (auto_scale_lr.base_batch_size) and LR, per-GPU batch = '
                        'total / --gpus-per-run; scale-lr: keep the per-GPU batch, mmengine\'s '
                        'auto_scale_lr scales the LR')
    parser.add_argument('--keep-checkpoints', type=_keep, default=1, metavar='N|all',
                        help='checkpoints each run keeps: the last N (plus the best one where '
                        'the preset saves it); all: the preset\'s own setting')
    parser.add_argument('--timeout', type=float, help='seconds after which a run is stopped '
                        'and recorded as failed')
    parser.add_argument('--vis-backend', nargs='+', choices=['tensorboard', 'wandb', 'mlflow'],
                        default=[], help="also log every run to mmengine's Tensorboard/Wandb/"
                        'MLflow VisBackend (off by default)')
    parser.add_argument('--slurm', metavar='PARTITION',
                        help='write a slurm job array (one run per task) + report job')
    parser.add_argument('--submit', action='store_true', help='with --slurm: call sbatch')
    parser.add_argument('--slurm-args', default='', help='extra #SBATCH options, e.g. '
                        '"--time=48:00:00 --account=X"')
    parser.add_argument('--run-index', type=int, help='run only the I-th run of the plan '
                        '(what each slurm array task does)')
    parser.add_argument('--no-retry-failed', action='store_true',
                        help='keep failed runs as they are instead of retrying them')
    parser.add_argument('--report-only', action='store_true',
                        help='only rebuild the tables and plots from finished runs')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the planned runs and their status, run nothing')
    parser.add_argument('--no-plots', action='store_true', help='skip the plots')
    return parser.parse_args(argv)


def _keep(text: str) -> Optional[int]:
    if text == 'all':
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {text!r}")
    return value


def _tasks(args) -> Tuple[object, list]:
    """``(suite or None, [(task name, spec, work dir, all variant names)])``."""
    from mmengine.config import Config

    from .spec import default_work_dir, select, spec_from_config
    from .suite import load_suite
    if not osp.isfile(args.config):
        raise CLIError(f'benchmark preset or suite not found: {args.config}')
    if args.repeats is not None and args.repeats < 1:
        raise CLIError(f'--repeats must be >= 1, got {args.repeats}')
    seeds = list(range(args.repeats)) if args.repeats else args.seeds
    cfg = Config.fromfile(args.config, import_custom_modules=False)
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or default_work_dir(name)
    if 'suite' in cfg:
        suite = load_suite(args.config, cfg, seeds)
        if args.variants:
            unknown = [v for v in args.variants if v not in suite.variants]
            if unknown:
                raise KeyError(f'unknown variant(s) {unknown}; the suite has {suite.variants}')
        out = []
        for task in suite.tasks:
            full = [v.name for v in task.spec.variants]
            keep = [v for v in full if not args.variants or v in args.variants or
                    v == suite.baseline]
            out.append((task.name, select(task.spec, keep), osp.join(work_dir, task.name), full))
        return suite, out
    spec = spec_from_config(cfg, args.config)
    full = [v.name for v in spec.variants]
    return None, [('', select(spec, args.variants, seeds), work_dir, full)]


def _plan(tasks) -> list:
    """Seed-major across tasks: every task and variant gets its first seed first."""
    from .spec import plan_runs
    items = []
    for t, (name, spec, wd, _) in enumerate(tasks):
        for run in plan_runs(spec, wd, name):
            items.append(((spec.seeds.index(run.seed), t), spec, run))
    return [(spec, run) for _, spec, run in sorted(items, key=lambda x: x[0])]


def _passthrough(argv: List[str]) -> List[str]:
    """The command line for slurm array tasks: the same arguments minus the slurm ones."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        if a in ('--slurm', '--slurm-args', '--jobs'):  # a task is one run: no --jobs
            skip = 1
        elif a.startswith(('--slurm=', '--slurm-args=', '--jobs=')) or a == '--submit':
            continue
        else:
            out.append(a)
    return out


def _variant_plans(tasks, opts, cfg_options) -> dict:
    """``{(task, variant): VariantPlan}``; a batch that does not fit is one error line."""
    from .resources import plan_variant
    return {(name, v.name): plan_variant(spec, v.name, name, opts.gpus_per_run,
                                          opts.batch_policy, opts.keep_checkpoints, cfg_options)
            for name, spec, _, _ in tasks for v in spec.variants}


def _dry_runtime(opts, slurm: Optional[str]) -> Tuple[Optional[dict], str]:
    """``(runtime, text)``: the runtime a run would get here (:attr:`.launch.Slot.runtime`), or
    ``None`` where the runs will run elsewhere (``--slurm``, or this machine lacks the
    ``--gpus-per-run`` GPUs: a plan made on a login node); ``run_status`` then judges a
    recorded run on its config alone."""
    from dataclasses import replace

    from .launch import describe_runtime, make_slots
    unknown = ('{} (models and torch not known here), so the status of a recorded run '
               'compares its config alone (one made with another device, thread count or torch '
               'will still run again)')
    if slurm:
        return None, unknown.format(f'a slurm task of partition {slurm}')
    try:
        runtime = make_slots(replace(opts, jobs=1))[0].runtime  # every slot gets the same kind
    except ValueError:  # fewer GPUs here than a run needs
        return None, unknown.format(f'{opts.gpus_per_run} GPUs')
    return runtime, describe_runtime(runtime)


def _run_one(args, items, opts) -> None:
    """``--run-index I`` (a slurm array task): the I-th run alone; exit 1 when it fails."""
    from dataclasses import replace

    from .runner import execute_all, run_prepare
    if not 0 <= args.run_index < len(items):
        raise CLIError(f'--run-index must be in [0, {len(items) - 1}], got {args.run_index}')
    spec, run = items[args.run_index]
    run_prepare(spec)
    results: list = []
    execute_all([(spec, run)], replace(opts, jobs=1), args.cfg_options, not args.no_retry_failed,
                on_done=lambda _, res: results.append(res))
    if results and results[0].get('status') == 'failed':
        print(f"error: run {run.key} failed: {results[0].get('error')}", file=sys.stderr)
        sys.exit(1)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with one_line_errors():
        from .launch import LaunchOptions
        from .resources import batch_header, batch_text, estimate_lines
        from .runner import execute_all, run_prepare, run_status, write_report
        from .suite import write_suite_report

        suite, tasks = _tasks(args)
        items = _plan(tasks)
        opts = LaunchOptions(jobs=args.jobs or 1, gpus_per_run=args.gpus_per_run,
                             timeout=args.timeout, vis_backends=list(args.vis_backend),
                             batch_policy=args.batch_policy,
                             keep_checkpoints=args.keep_checkpoints,
                             threads_per_run=args.threads_per_run)
        nvar = sorted({len(spec.variants) for _, spec, _, _ in tasks})
        nseed = sorted({len(spec.seeds) for _, spec, _, _ in tasks})
        what = f'suite {suite.name}: {len(tasks)} tasks, ' if suite else \
            f'benchmark {tasks[0][1].name}: '
        base_dir = osp.dirname(tasks[0][2]) if suite else tasks[0][2]
        print(f'{what}{"/".join(map(str, nvar))} variants x {"/".join(map(str, nseed))} seeds = '
              f'{len(items)} runs, work dir {base_dir}', flush=True)
        if args.run_index is not None:
            return _run_one(args, items, opts)
        header = batch_header(opts.batch_policy, opts.gpus_per_run)
        if args.dry_run or not args.report_only:
            plans = _variant_plans(tasks, opts, args.cfg_options)
            print(header)
            print('\n'.join(estimate_lines(list(plans.values()), opts.jobs, opts.gpus_per_run,
                                           opts.keep_checkpoints)), flush=True)
        if args.dry_run:
            runtime, where = _dry_runtime(opts, args.slurm)
            print(f'each run: {where}')
            for spec, run in items:
                batch = batch_text(plans[(run.task, run.variant)].batch)
                print(f'  {run.key:44s} {batch:30s} '
                      f'{run_status(spec, run, args.cfg_options, opts, runtime)}')
            return
        if args.slurm:
            from .slurm import submit, write_sbatch
            cmd = [sys.executable, '-m', 'mmvitreg.benchmark'] + _passthrough(argv)
            if not args.work_dir:
                cmd += ['--work-dir', base_dir]
            paths = write_sbatch(base_dir, f'bench-{osp.splitext(osp.basename(args.config))[0]}',
                                 len(items), cmd, args.slurm, args.gpus_per_run,
                                 max_parallel=args.jobs, extra=shlex.split(args.slurm_args))
            print(f"written: {paths['array']}, {paths['report']}")
            if args.submit:
                print(f'submitted job array {submit(paths)} (+ report job after it)')
            else:
                print(f"submit with: sbatch {paths['array']}   (then: sbatch "
                      f"--dependency=afterany:<array id> {paths['report']})")
            return
        if not args.report_only:
            for _, spec, _, _ in tasks:
                run_prepare(spec, lambda s: print(s, flush=True))
            by_spec = {id(spec): (wd, full) for _, spec, wd, full in tasks}
            counts = execute_all(
                items, opts, args.cfg_options, not args.no_retry_failed,
                lambda s: print(s, flush=True),
                on_done=lambda spec, res: write_report(spec, *by_spec[id(spec)], plots=False))
            notes = [f'{len(items)} runs: {counts["ok"]} ran ok, {counts["failed"]} failed, '
                     f'{counts["skipped"]} finished earlier or running elsewhere (skipped).',
                     header[0].upper() + header[1:] + '.']
        else:
            notes = []
        outs = []
        for _, spec, wd, full in tasks:
            paths = write_report(spec, wd, full, notes=notes if not suite else (),
                                 plots=not args.no_plots)
            outs += [paths[k] for k in ('markdown_file', 'summary_csv', 'runs_csv', 'json',
                                        'forest_plot', 'metrics_plot', 'curves_plot')
                     if k in paths]
            if not suite:
                print('\n' + paths['markdown'])
        if suite:
            paths = write_suite_report(suite, base_dir, notes,
                                       plots=not args.no_plots)
            outs += [paths[k] for k in ('markdown_file', 'csv', 'json', 'forest_plot')
                     if k in paths]
            print('\n' + paths['markdown'])
        print('written: ' + ', '.join(outs))


def run() -> None:
    try:
        main()
    except KeyboardInterrupt as exc:
        signum = getattr(exc, 'signum', signal.SIGINT)
        print('\ninterrupted: rerun the same command to continue (finished runs are kept, the '
              'interrupted ones resume from their last checkpoint)'
              f'{"" if signum == signal.SIGINT else " [" + signal.Signals(signum).name + "]"}',
              file=sys.stderr)
        sys.exit(128 + int(signum))
