#!/usr/bin/env python
"""Evaluate a checkpoint with the test split of an mmpretrain or mmdet config.

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out results.pkl   # also dump raw predictions
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmvitreg.utils.cli import (CLIError, add_launch_args, build_runner, load_config,  # noqa: E402
                                one_line_errors, parse_launch_args, set_work_dir,
                                setup_cpu_distributed, shutdown_distributed)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation log')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--allow-partial-checkpoint', action='store_true',
                        help='evaluate even when the checkpoint leaves model tensors unloaded '
                        '(missing or of another shape; by default this is an error)')
    parser.add_argument('--amp', action='store_true', help='mixed-precision inference')
    parser.add_argument('--show-dir', help='save a picture of the predictions of every test '
                        'image to this folder (HOI models: the top triplets)')
    add_launch_args(parser, 'test_evaluator.mode=qpic')
    return parse_launch_args(parser, argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the tool; ``argv`` defaults to ``sys.argv[1:]``."""
    with one_line_errors() as guard:
        args = parse_args(argv)
        import mmvitreg  # noqa: F401
        from mmvitreg.utils.checkpoint import trusted_checkpoints
        cfg = load_config(args.config, args.cfg_options)
        if not osp.isfile(args.checkpoint):
            raise CLIError(f'checkpoint file not found: {args.checkpoint}')
        cfg.launcher = args.launcher
        set_work_dir(cfg, args.config, args.work_dir)
        # weights and meta only, with the safe loader (also for checkpoints of our own runs:
        # their training state is skipped); --trust-checkpoint unpickles everything
        cfg.load_from = args.checkpoint
        if args.amp:
            cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
        if args.show_dir:
            from mmvitreg.visualization import enable_show_dir
            enable_show_dir(cfg, args.show_dir)
        if args.out:
            dump = dict(type='DumpResults', out_file_path=args.out)
            evaluators = cfg.test_evaluator
            if isinstance(evaluators, (list, tuple)):
                cfg.test_evaluator = list(evaluators) + [dump]
            else:
                cfg.test_evaluator = [evaluators, dump]
        setup_cpu_distributed(cfg, args.launcher)
        with trusted_checkpoints(trust_all=args.trust_checkpoint):
            runner = build_runner(cfg)
            guard.watch(runner)
            from mmvitreg.utils.checkpoint_fit import check_checkpoint_fits
            check_checkpoint_fits(runner.model, args.checkpoint, args.allow_partial_checkpoint)
            runner.test()
        shutdown_distributed()


if __name__ == '__main__':
    main()
