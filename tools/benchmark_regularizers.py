#!/usr/bin/env python
"""Compare regularizers: train (and test) every variant of a benchmark preset, or of every task
of a suite, with several seeds, and print tables with paired statistics.

The tool is ``python -m mmvitreg.benchmark`` (it works from an installed package); this script
only runs it from a checkout. Examples::

    python tools/benchmark_regularizers.py configs/benchmark/digits_regularizers.py --jobs 2
    python tools/benchmark_regularizers.py configs/benchmark/suite_digits_cpu.py --jobs 2
    python tools/benchmark_regularizers.py configs/benchmark/coco_detr_dropkey.py --jobs 1 \\
        --gpus-per-run 8
    python tools/benchmark_regularizers.py PRESET --slurm gpu --gpus-per-run 8 --submit

See ``python -m mmvitreg.benchmark --help`` for every option.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmvitreg.benchmark.cli import run  # noqa: E402

if __name__ == '__main__':
    run()
