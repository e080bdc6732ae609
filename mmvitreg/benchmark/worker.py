"""One benchmark run in one process: train with mmengine's ``Runner``, then (``--test``) evaluate
the last or best checkpoint with the test split, in the same process (one import, not two).

    python -m mmvitreg.benchmark.worker RUN_CONFIG --work-dir RUN [--resume] [--test last|best]
    python -m torch.distributed.run --nproc_per_node=K -m mmvitreg.benchmark.worker ... \\
        --launcher pytorch

Training logs go to ``RUN/<timestamp>/``, the test to ``RUN/test/<timestamp>/``. The line
``[benchmark] testing <checkpoint>`` marks the start of the test stage in the captured output.
Works from an installed package: it needs no file of the source checkout.
"""
import argparse
import contextlib
import gc
import os
import os.path as osp
import warnings
from typing import List, Optional

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

TEST_MARKER = '[benchmark] testing '


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train (and test) one benchmark run')
    parser.add_argument('config')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work dir')
    parser.add_argument('--test', choices=['last', 'best'],
                        help='after training, test this checkpoint on the test split')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', '0')
    return args


def _trusted(work_dir: str):
    """The run's own work dir holds only checkpoints this benchmark wrote: resuming and testing
    them may unpickle the full training state (where the package restricts checkpoint loading)."""
    try:
        from mmvitreg.utils.checkpoint import trusted_checkpoints
    except ImportError:  # a package version without checkpoint trust levels
        return contextlib.nullcontext()
    return trusted_checkpoints(work_dir)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.launcher != 'none':  # a torchrun rank: die with torchrun (which dies with the tool)
        from .launch import die_with_parent
        die_with_parent()
    from mmvitreg.utils.cli import (CLIError, add_rng_state_hook, add_train_check_hook,
                                    build_runner, load_config, one_line_errors,
                                    setup_cpu_distributed, shutdown_distributed,
                                    use_safe_checkpoint_hook)
    with one_line_errors() as guard, _trusted(args.work_dir):
        from mmengine.dist import broadcast_object_list, get_rank

        import mmvitreg  # noqa: F401  (registers mmvitreg types in both toolboxes)
        from .logs import find_checkpoint

        cfg = load_config(args.config)
        cfg.launcher = args.launcher
        cfg.work_dir = args.work_dir
        add_rng_state_hook(cfg)  # an interrupted run resumes exactly
        add_train_check_hook(cfg)  # settings that don't fit the loop: refused before iteration 0
        use_safe_checkpoint_hook(cfg)  # a kill mid-save keeps the previous checkpoint
        if args.resume:
            cfg.resume, cfg.load_from = True, None
        setup_cpu_distributed(cfg, args.launcher)
        runner = build_runner(cfg)
        if guard is not None:  # errors inside the training loop keep their traceback
            guard.watch(runner)
        runner.train()
        if args.test:
            ckpt = [find_checkpoint(args.work_dir, args.test) if get_rank() == 0 else None]
            broadcast_object_list(ckpt)
            if ckpt[0] is None:
                raise CLIError('test: training wrote no checkpoint')
            del runner
            gc.collect()
            print(TEST_MARKER + osp.basename(ckpt[0]), flush=True)
            test_cfg = load_config(args.config)
            test_cfg.launcher = args.launcher
            test_cfg.work_dir = osp.join(args.work_dir, 'test')
            test_cfg.load_from, test_cfg.resume = ckpt[0], False
            setup_cpu_distributed(test_cfg, args.launcher)
            runner = build_runner(test_cfg)
            if guard is not None:
                guard.watch(runner)
            runner.test()
        shutdown_distributed()


if __name__ == '__main__':
    main()
