"""Regularizer benchmark: run a preset's variants x seeds and report mean ± std, gains, time,
memory and curves. Entry point: ``tools/benchmark_regularizers.py``; presets: ``configs/benchmark``.

Not imported by ``import mmvitreg`` (it needs matplotlib only for the plots).
"""
from .aggregate import mean_std, summarize, to_csv, to_markdown
from .logs import extract_error, load_run_scalars, read_test_metrics
from .runner import LaunchOptions, execute_run, run_benchmark, write_report
from .spec import BenchmarkSpec, RunSpec, Variant, build_run_config, load_spec, plan_runs, select

__all__ = ['BenchmarkSpec', 'Variant', 'RunSpec', 'load_spec', 'select', 'build_run_config',
           'plan_runs', 'LaunchOptions', 'execute_run', 'run_benchmark', 'write_report',
           'summarize', 'mean_std', 'to_csv', 'to_markdown', 'extract_error', 'load_run_scalars',
           'read_test_metrics']
