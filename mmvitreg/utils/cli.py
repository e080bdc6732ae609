"""Shared plumbing of ``tools/train.py`` and ``tools/test.py`` (one generic pair for mmpretrain
and mmdet configs): config loading, CPU distributed set-up, AMP selection and one-line errors."""
import os
import os.path as osp
import re
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from mmengine.config import Config, DictAction  # noqa: F401  (re-exported for the tools)

DEBUG_ENV = 'MMVITREG_DEBUG'


def add_launch_args(parser, cfg_options_example: str) -> None:
    """The arguments train.py and test.py share: ``--cfg-options``, ``--launcher``, local rank."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help=f'override config settings, e.g. {cfg_options_example}')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser):
    """Parse, and export ``LOCAL_RANK`` for launchers that pass it as an argument only."""
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


class CLIError(Exception):
    """An error whose message is the whole story (printed without a traceback)."""


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    if not osp.isfile(path):
        raise CLIError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'default_scope' not in cfg:
        raise CLIError(f"config {path} sets no `default_scope` ('mmpretrain' or 'mmdet')")
    return cfg


def set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def enable_amp(cfg: Config) -> None:
    """fp16 ``AmpOptimWrapper`` with dynamic loss scale on CUDA; bf16 autocast on CPU."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'AutocastOptimWrapper'):
        return
    if wrapper != 'OptimWrapper':
        raise CLIError(f'--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper}')
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        cfg.optim_wrapper.type = 'AutocastOptimWrapper'
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16')


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without GPUs: gloo process group, DDP without device ids.

    mmengine's launcher calls ``torch.cuda.set_device`` and wraps the model with
    ``device_ids=[LOCAL_RANK]``, both of which fail on a CPU-only machine. When no CUDA device is
    present we initialise the gloo group ourselves (mmengine then skips its own init) and pass
    ``device_ids=None`` to DDP. On GPU machines nothing changes.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
    if backend != 'gloo':
        print(f'[mmvitreg] no CUDA device: using the gloo backend instead of {backend!r}',
              file=sys.stderr)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper_cfg = cfg.get('model_wrapper_cfg', None) or dict(type='MMDistributedDataParallel')
    wrapper_cfg.setdefault('device_ids', None)
    wrapper_cfg.setdefault('broadcast_buffers', False)
    wrapper_cfg.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper_cfg


def shutdown_distributed() -> None:
    """Tear the process group down once the run is over.

    Without it, a gloo worker can exit while the group's background threads still run, which
    aborts that process at interpreter shutdown ("terminate called without an active exception").
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


_BUILD_PREFIX = re.compile(r'class `[^`]+` in [^:]+\.py: ')


def describe_error(exc: BaseException) -> str:
    """One line naming the problem, without mmengine's nested ``class `X` in y.py:`` prefixes."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        msg = exc.args[0]
    else:
        msg = str(exc)
    msg = _BUILD_PREFIX.sub('', msg).strip()
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in '"\'':
        msg = msg[1:-1]
    unknown = re.search(r'(\S+) is not in the (\S+) registry', msg)
    if unknown:
        name, registry = unknown.group(1).strip('`'), unknown.group(2)
        msg = (f'unknown type {name!r} in registry {registry} (check the spelling, and that '
               "its package is listed in custom_imports, e.g. imports=['mmvitreg'])")
    if isinstance(exc, FileNotFoundError):
        path = getattr(exc, 'filename', None)
        msg = f'file or directory not found: {path}' if path else msg
        if 'not found' not in msg and 'can not be found' not in msg:
            msg = f'file or directory not found: {msg}'
    first = msg.splitlines()[0] if msg else type(exc).__name__
    return f'{type(exc).__name__}: {first}' if not isinstance(exc, CLIError) else first


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn configuration/data errors into ``error: ...`` on stderr and exit status 1.

    Set ``MMVITREG_DEBUG=1`` to get the full traceback instead.
    """
    try:
        yield
    except (CLIError, FileNotFoundError, KeyError, ValueError, TypeError, ImportError,
            NotImplementedError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f'error: {describe_error(exc)}  [{DEBUG_ENV}=1 shows the traceback]',
              file=sys.stderr)
        sys.exit(1)
