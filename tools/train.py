#!/usr/bin/env python
"""Train a model from an mmpretrain or mmdet config (mmvitreg types are registered on import).

Examples::

    python tools/train.py configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py
    python tools/train.py CONFIG --resume                  # resume from the latest checkpoint
    python tools/train.py CONFIG --amp                     # fp16 on GPU, bf16 autocast on CPU
    bash tools/dist_train.sh CONFIG 8                      # 8 processes via torchrun
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmvitreg.utils.cli import (add_launch_args, add_rng_state_hook,  # noqa: E402
                                add_train_check_hook, build_runner, check_resume_trusted,
                                enable_amp, load_config, one_line_errors, parse_launch_args,
                                set_work_dir, setup_cpu_distributed, shutdown_distributed,
                                use_safe_checkpoint_hook)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (mmpretrain or mmdet config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir if no '
        'path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 + loss scaling on GPU, bf16 autocast on CPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size (auto_scale_lr)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    add_launch_args(parser, 'model.backbone.drop_path_rate=0.1')
    return parse_launch_args(parser, argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the tool; ``argv`` defaults to ``sys.argv[1:]``."""
    with one_line_errors() as guard:
        args = parse_args(argv)
        import mmvitreg  # noqa: F401  (registers mmvitreg types in both toolboxes)
        from mmvitreg.utils.checkpoint import trusted_checkpoints
        cfg = load_config(args.config, args.cfg_options)
        cfg.launcher = args.launcher
        set_work_dir(cfg, args.config, args.work_dir)
        add_rng_state_hook(cfg)  # exact --resume (random generators saved with checkpoints)
        add_train_check_hook(cfg)  # settings that don't fit the loop: refused before iteration 0
        use_safe_checkpoint_hook(cfg)  # atomic saves: a kill never leaves no good checkpoint
        if args.amp:
            enable_amp(cfg)
        configured_weights = cfg.load_from
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume is not None:
            cfg.resume, cfg.load_from = True, args.resume
        if args.no_validate:
            cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        if args.auto_scale_lr:
            cfg.setdefault('auto_scale_lr', {})['enable'] = True
        # full unpickling only for the run's own resume checkpoint (or with --trust-checkpoint);
        # load_from / init_cfg weights are loaded with the safe loader
        resume_from = check_resume_trusted(cfg, args.trust_checkpoint)
        if resume_from is not None:  # auto resume: the newest complete checkpoint
            cfg.load_from = resume_from
        elif args.resume == 'auto':
            # nothing to resume yet: start as configured, from the config's load_from weights
            # (mmengine's tools would drop them and silently start from scratch)
            cfg.resume, cfg.load_from = False, configured_weights
        setup_cpu_distributed(cfg, args.launcher)
        with trusted_checkpoints(resume_from, trust_all=args.trust_checkpoint):
            runner = build_runner(cfg)
            guard.watch(runner)
            runner.train()
        shutdown_distributed()


if __name__ == '__main__':
    main()
