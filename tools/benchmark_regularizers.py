#!/usr/bin/env python
"""Compare regularizers: train + test every variant of a benchmark preset with several seeds and
print one results table (mean ± std over seeds, gain vs baseline, time and peak memory per run).

Examples::

    # the default benchmark on the bundled digits data (CPU, ~10-15 min on 2 cores)
    python tools/benchmark_regularizers.py
    python tools/benchmark_regularizers.py configs/benchmark/digits_regularizers.py \\
        --variants baseline dropkey_decrease --seeds 0 1 2
    # shrink every run further (any config key), e.g. for a quick look
    python tools/benchmark_regularizers.py PRESET --cfg-options train_cfg.max_epochs=2
    # GPU presets: each run goes to tools/dist_train.sh (8 processes) or to slurm
    python tools/benchmark_regularizers.py configs/benchmark/cifar100_dropkey.py \\
        --launcher pytorch --gpus 8
    python tools/benchmark_regularizers.py PRESET --launcher slurm --partition gpu --gpus 8
    python tools/benchmark_regularizers.py PRESET --report-only   # tables/plots from finished runs

Rerunning the same command skips finished runs (and resumes an interrupted one); failed runs are
retried. Outputs go to ``--work-dir`` (default ``work_dirs/benchmark/<preset>``): results.md,
summary.csv, runs.csv, results.json, metrics.png, curves.png and one folder per run.
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmvitreg.utils.cli import CLIError, DictAction, one_line_errors  # noqa: E402

DEFAULT_PRESET = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                          'benchmark', 'digits_regularizers.py')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark regularizers: variants x seeds of a preset -> one results table',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('preset', nargs='?', default=DEFAULT_PRESET,
                        help='benchmark preset (configs/benchmark/*.py)')
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/benchmark/<preset>)')
    parser.add_argument('--variants', nargs='+', help='run only these variants (in this order)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seeds', nargs='+', type=int, help="seeds (default: the preset's)")
    seeds.add_argument('--repeats', type=int, help='use seeds 0 .. N-1')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every run, after the preset and the variant')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process per run; pytorch: tools/dist_train.sh; '
                        'slurm: tools/slurm_train.sh')
    parser.add_argument('--gpus', type=int, default=1, help='processes/GPUs per run '
                        '(pytorch/slurm launchers)')
    parser.add_argument('--partition', help='slurm partition (--launcher slurm)')
    parser.add_argument('--timeout', type=float, help='seconds after which a train or test '
                        'process is stopped and the run recorded as failed')
    parser.add_argument('--no-retry-failed', action='store_true',
                        help='keep failed runs as they are instead of retrying them')
    parser.add_argument('--report-only', action='store_true',
                        help='only rebuild the tables and plots from finished runs')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the planned runs and their status, run nothing')
    parser.add_argument('--no-plots', action='store_true', help='skip the plots')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        from mmvitreg.benchmark import LaunchOptions, load_spec, run_benchmark, select, write_report
        from mmvitreg.benchmark.runner import RESULT_FILE, _read_json
        from mmvitreg.benchmark.spec import (build_run_config, config_fingerprint,
                                             default_work_dir, plan_runs)

        spec = load_spec(args.preset)
        all_variants = [v.name for v in spec.variants]
        if args.repeats is not None and args.repeats < 1:
            raise CLIError(f'--repeats must be >= 1, got {args.repeats}')
        seeds = list(range(args.repeats)) if args.repeats else args.seeds
        spec = select(spec, args.variants, seeds)
        work_dir = args.work_dir or default_work_dir(spec)
        opts = LaunchOptions(launcher=args.launcher, gpus=args.gpus, partition=args.partition,
                             timeout=args.timeout)
        runs = plan_runs(spec, work_dir)
        print(f'benchmark {spec.name}: {len(spec.variants)} variants x {len(spec.seeds)} seeds '
              f'= {len(runs)} runs, metric {spec.primary_metric}, work dir {work_dir}')
        if args.dry_run:
            for run in runs:
                res = _read_json(osp.join(run.work_dir, RESULT_FILE))
                state = res['status'] if res else 'to run'
                if res and res.get('fingerprint'):
                    try:
                        cfg = build_run_config(spec, spec.variant(run.variant), run.seed,
                                               args.cfg_options)
                        if config_fingerprint(cfg) != res['fingerprint']:
                            state += ' (config changed since: will run again)'
                    except Exception as exc:  # shown, the real run records it as failed
                        state = f'config error: {exc}'
                print(f'  {run.key:40s} {state}')
            return
        if args.report_only:
            paths = write_report(spec, work_dir, all_variants, plots=not args.no_plots)
        else:
            paths = run_benchmark(spec, work_dir, opts, extra_options=args.cfg_options,
                                  retry_failed=not args.no_retry_failed,
                                  all_variants=all_variants, plots=not args.no_plots)
        print()
        print(paths['markdown'])
        outs = [paths[k] for k in ('markdown_file', 'summary_csv', 'runs_csv', 'metrics_plot',
                                   'curves_plot') if k in paths]
        print('written: ' + ', '.join(outs))


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        print('\ninterrupted: rerun the same command to continue (finished runs are kept, the '
              'interrupted one resumes from its last checkpoint)', file=sys.stderr)
        sys.exit(130)
