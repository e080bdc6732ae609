"""Regularizer benchmark: run a preset's variants x seeds (or a suite of presets across tasks),
``--jobs`` at once, and report paired statistics (CIs, raw and Holm-adjusted p-values,
probability of improvement, IQM, minimum detectable effect), tables and plots. Entry points:
``python -m mmvitreg.benchmark`` and ``tools/benchmark_regularizers.py``; presets and suites:
``configs/benchmark``.

Each run is a ``python -m mmvitreg.benchmark.worker`` process, so everything works from an
installed package. Not imported by ``import mmvitreg`` (matplotlib is needed for the plots only).

Modules: ``spec`` (presets), ``suite`` (suites), ``launch`` (processes, slots, locks),
``worker`` (one run), ``runner`` (sweep + report), ``resources`` (batch per GPU, checkpoints
kept, GPU-hours and disk of a plan), ``stats`` / ``aggregate`` (numbers and tables), ``plots``,
``logs`` (reading mmengine's work dirs), ``slurm`` (job arrays), ``cli``, ``docs`` (the recipe
docs' benchmark sections, written from the presets).
"""
from .aggregate import summarize, to_csv, to_markdown
from .launch import LaunchOptions, Slot, make_slots
from .runner import collect_results, execute_all, execute_run, write_report
from .spec import (BenchmarkSpec, RunSpec, Variant, build_run_config, load_spec, plan_runs,
                   recipe_delta, select)
from .stats import (describe, holm_adjust, paired_comparison, probability_of_improvement,
                    stratified_bootstrap_iqm, stratified_bootstrap_pi)
from .suite import load_suite, suite_table, write_suite_report

__all__ = ['BenchmarkSpec', 'Variant', 'RunSpec', 'load_spec', 'select', 'build_run_config',
           'plan_runs', 'recipe_delta', 'LaunchOptions', 'Slot', 'make_slots', 'execute_run',
           'execute_all', 'collect_results', 'write_report', 'summarize', 'to_csv',
           'to_markdown', 'describe', 'paired_comparison', 'stratified_bootstrap_pi',
           'stratified_bootstrap_iqm', 'holm_adjust', 'probability_of_improvement',
           'load_suite', 'suite_table', 'write_suite_report']
