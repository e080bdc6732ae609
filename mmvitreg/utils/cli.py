"""Shared plumbing of ``tools/train.py`` and ``tools/test.py`` (one generic pair for mmpretrain
and mmdet configs): config loading, CPU distributed set-up, AMP selection, checkpoint trust and
one-line errors for bad input."""
import ast
import os
import os.path as osp
import re
import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook

DEBUG_ENV = 'MMVITREG_DEBUG'


class CLIError(Exception):
    """An error whose message is the whole story (printed without a traceback)."""


def _flatten_dict_literal(prefix: str, text: str) -> Optional[List[str]]:
    """``'dict(a=1, b=dict(c=2))'`` -> ``['prefix.a=1', 'prefix.b.c=2']``.

    None if the text is not a literal."""
    try:
        node = ast.parse(text.strip(), mode='eval').body
    except SyntaxError:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' \
            and not node.args and all(kw.arg for kw in node.keywords):
        items = [(kw.arg, kw.value) for kw in node.keywords]
    elif isinstance(node, ast.Dict) and all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
        items = [(k.value, v) for k, v in zip(node.keys, node.values)]
    else:
        return None
    pairs: List[str] = []
    for key, value in items:
        source = ast.get_source_segment(text.strip(), value)
        nested = _flatten_dict_literal(f'{prefix}.{key}', source)
        pairs += nested if nested is not None else [f'{prefix}.{key}={source}']
    return pairs


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` with one-line errors for two common mistakes: ``key value``
    (a space instead of ``=``) and a whole dict as a value (``key=dict(a=1)``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for i, item in enumerate(values):
            if '=' not in item:
                prev = values[i - 1] if i else ''
                if prev.endswith('='):
                    fix = f'write {prev}{item} (no space after =)'
                elif item.endswith('.py'):
                    fix = 'put the config file before --cfg-options'
                elif i + 1 < len(values) and '=' not in values[i + 1]:
                    fix = f'write {item}={values[i + 1]}'
                else:
                    fix = f'write {item}=VALUE'
                raise CLIError(f"{option_string} takes key=value pairs, got {item!r} without "
                               f"'='; {fix}")
            key, value = item.split('=', maxsplit=1)
            if re.match(r'\s*(dict\s*\(|\{)', value):
                pairs = _flatten_dict_literal(key, value)
                fix = ' '.join(pairs) if pairs else f'{key}.NAME=VALUE'
                raise CLIError(f'{option_string} cannot take a dict as a value ({item!r}); set '
                               f'its keys one by one: {fix}')
        super().__call__(parser, namespace, values, option_string)


def add_launch_args(parser, cfg_options_example: str) -> None:
    """The arguments train.py and test.py share: ``--cfg-options``, ``--trust-checkpoint``,
    ``--launcher``, local rank."""
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help=f'override config settings as key=value pairs, e.g. '
                        f'{cfg_options_example} (a dict value: one pair per key)')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='fully unpickle the checkpoints this run loads (load_from, init_cfg, the test '
        'checkpoint, --resume from outside the work dir). By default they are loaded with '
        "torch's safe weights-only loader; pass this only for files you trust")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser, argv: Optional[Sequence[str]] = None):
    """Parse, and export ``LOCAL_RANK`` for launchers that pass it as an argument only."""
    args = parser.parse_args(argv)
    if args.launcher != 'none' and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


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


def _ensure_custom_hook(cfg: Config, hook_type: str) -> None:
    """Append ``dict(type=hook_type)`` to ``custom_hooks`` unless the config has one (whose
    settings then win)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(isinstance(h, dict) and h.get('type') == hook_type for h in hooks):
        cfg.custom_hooks = hooks + [dict(type=hook_type)]


def add_rng_state_hook(cfg: Config) -> None:
    """Add ``RNGStateHook`` (random generators in checkpoints, DropKey's mask step) to the
    config's ``custom_hooks`` unless it has one: ``--resume`` is then exact, stochastic depth,
    dropout and DropKey included. ``custom_hooks=[dict(type='RNGStateHook', ...)]`` in a config
    overrides the defaults."""
    _ensure_custom_hook(cfg, 'RNGStateHook')


def add_train_check_hook(cfg: Config) -> None:
    """Add ``TrainLoopCheckHook`` to ``custom_hooks`` unless the config has one: settings that
    do not fit the training loop are refused before the first iteration, in one line."""
    _ensure_custom_hook(cfg, 'TrainLoopCheckHook')


def use_safe_checkpoint_hook(cfg: Config) -> None:
    """Save checkpoints with ``SafeCheckpointHook`` (atomic saves, old ones deleted only after
    the new one is in place, never files outside the run's folder): a plain ``CheckpointHook`` in
    ``default_hooks`` (or mmengine's implicit default) becomes one with the same arguments;
    ``checkpoint=None`` and other hook types are kept."""
    hooks = cfg.get('default_hooks', None)
    if hooks is None:
        hooks = cfg.default_hooks = {}
    if 'checkpoint' not in hooks:
        hooks['checkpoint'] = dict(type='SafeCheckpointHook', interval=1)
        return
    hook = hooks['checkpoint']
    if isinstance(hook, dict) and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook['type'] = 'SafeCheckpointHook'


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


def resume_checkpoint(cfg: Config) -> Optional[str]:
    """The checkpoint a resuming run will restore (``None`` when not resuming or none exists):
    ``load_from``, else the newest complete one of the work dir
    (:func:`mmvitreg.utils.resume.find_resume_checkpoint`, one error line if none is)."""
    if not cfg.get('resume', False):
        return None
    if cfg.get('load_from'):
        return cfg.load_from
    from .resume import find_resume_checkpoint
    return find_resume_checkpoint(cfg.work_dir)


def check_resume_trusted(cfg: Config, trust_all: bool) -> Optional[str]:
    """Return the resume checkpoint when it may be unpickled in full, else raise a
    :class:`CLIError`: full training state is only restored from the run's own work dir or
    with ``--trust-checkpoint``."""
    path = resume_checkpoint(cfg)
    if path is None or trust_all:
        return path
    work_dir = osp.realpath(cfg.work_dir)
    if not osp.realpath(path).startswith(work_dir.rstrip(os.sep) + os.sep):
        raise CLIError(
            f'--resume restores the full training state, which unpickles arbitrary objects, and '
            f'{path} is outside this run\'s work dir {cfg.work_dir}; pass --trust-checkpoint if '
            'you trust the file, or start a new run from its weights with '
            f'--cfg-options load_from={path}')
    return path


class _RunStartedHook(Hook):
    """Marks the end of set-up: the first hook call of the train/test loop itself."""
    priority = 'LOWEST'

    def __init__(self, guard: 'ErrorGuard') -> None:
        self.guard = guard

    def before_train(self, runner) -> None:
        self.guard.running = True

    def before_test(self, runner) -> None:
        self.guard.running = True


class ErrorGuard:
    """Tells :func:`one_line_errors` whether the run has left set-up (then errors keep their
    traceback)."""

    def __init__(self) -> None:
        self.running = False

    def watch(self, runner) -> None:
        """Call with the built runner, before ``runner.train()``/``runner.test()``."""
        runner.register_hook(_RunStartedHook(self), priority='LOWEST')


INPUT_ERRORS = (CLIError, FileNotFoundError, KeyError, ValueError, TypeError, ImportError,
                NotImplementedError)


@contextmanager
def one_line_errors() -> Iterator[ErrorGuard]:
    """Turn bad input (config, data paths, checkpoints, arguments) into ``error: ...`` on stderr
    and exit status 1.

    Only set-up is covered: parsing, loading the config, building the runner, its datasets,
    hooks and evaluators, and loading checkpoints. Once the train/test loop has started
    (``guard.watch(runner)`` tells), any exception propagates with its full traceback, since it
    is a failure of the run rather than of its input. ``MMVITREG_DEBUG=1`` shows the traceback
    of set-up errors too.
    """
    guard = ErrorGuard()
    try:
        yield guard
    except INPUT_ERRORS as exc:
        if guard.running or os.environ.get(DEBUG_ENV):
            raise
        print(f'error: {describe_error(exc)}  [{DEBUG_ENV}=1 shows the traceback]',
              file=sys.stderr)
        sys.exit(1)
