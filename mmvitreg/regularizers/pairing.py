"""Pairing by seed: a mechanism's added modules leave the host's random stream untouched.

A benchmark compares a variant with its baseline run by run, with the same seed. That pairing
holds only if the variant's host draws the same random numbers as the baseline's, but modules
added by a mechanism (Re-attention's head mixing, DRLoc's MLP) draw from the global generators
when they are built and again when they are initialised, which shifts every later draw of the
host (its remaining init, the head's, the training stream). So every attach function
(:func:`~.registry.register_regularizer` wraps it with :func:`keep_host_rng`):

* builds what it adds inside :func:`isolated_rng`: the global torch (CPU and current CUDA
  device), numpy and Python generators are saved, seeded with :func:`derived_seed` (torch's
  seed and the regularizer key, so the added modules are reproducible per seed and differ across
  seeds) and restored afterwards;
* routes the host's ``init_weights`` through an :class:`InitSite`: the host initialises with the
  added modules detached, so it draws exactly what the baseline draws (its ``init_cfg`` does not
  reach them); then each key's added modules run their own init (``init_weights`` where a module
  has one, else its children's) in :func:`isolated_rng`; then ``Pretrained`` ``init_cfg`` entries
  on the host or inside it load the added modules' entries of their checkpoints (mmengine applies
  ``Pretrained`` after the other init, so a checkpoint holding them still wins).

An ``init_cfg`` of a module *above* the host (the classifier's, for a ``Regularized`` backbone)
still reaches the added modules; in the project's configs none matches a layer they have.
"""
import contextlib
import functools
import hashlib
import random
from typing import Callable, Iterator, List, Set, Tuple

import numpy as np
import torch
import torch.nn as nn

from .site import Site

__all__ = ['derived_seed', 'isolated_rng', 'added_children', 'own_init', 'InitSite',
           'keep_host_rng']

Added = List[Tuple[nn.Module, str]]  # (host module, child name) of each added module


def derived_seed(seed: int, salt: str) -> int:
    """A 63-bit seed determined by ``seed`` and ``salt`` (e.g. the regularizer key)."""
    digest = hashlib.sha256(f'{int(seed)}/{salt}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block on the global generators seeded with ``seed``; restore their states after.

    Torch's CPU generator and, when CUDA is initialised, the current device's; numpy's and
    Python's. CUDA is never seeded while uninitialised (that would queue a seed for later).
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = [torch.cuda.current_device()] if cuda else []
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def added_children(model: nn.Module, before: Set[int]) -> Added:
    """``(parent, name)`` of the children of ``model``'s modules that are not in ``before``
    (ids of the modules it had) while their parent is: the modules an attach function added."""
    return [(parent, name) for parent in model.modules() if id(parent) in before
            for name, child in parent._modules.items()
            if child is not None and id(child) not in before]


def own_init(module: nn.Module) -> None:
    """A module's own init: its ``init_weights``, else its children's (e.g. the heads of a
    ``ModuleList`` loss term)."""
    init = getattr(module, 'init_weights', None)
    if callable(init):
        init()
        if hasattr(module, '_params_init_info'):  # inside an mmengine init: log it as done
            from mmengine.model.weight_init import update_init_info
            update_init_info(module, f'Initialized by {type(module).__name__}.init_weights '
                             '(mmvitreg: on its own seed)')
        return
    for child in module.children():
        own_init(child)


@contextlib.contextmanager
def detached(added: Added) -> Iterator[None]:
    """Take the added modules out of their parents for a block; put them back in place after."""
    orders = {id(parent): (parent, list(parent._modules)) for parent, _ in added}
    taken = {(id(parent), name): parent._modules.pop(name) for parent, name in added}
    try:
        yield
    finally:
        for key, (parent, names) in orders.items():
            current = dict(parent._modules)
            parent._modules.clear()
            for name in names:
                module = taken[(key, name)] if (key, name) in taken else current.pop(name, None)
                parent._modules[name] = module
            parent._modules.update(current)


def _pretrained_cfgs(module: nn.Module) -> List[dict]:
    cfgs = getattr(module, 'init_cfg', None)
    cfgs = cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]
    return [c for c in cfgs if isinstance(c, dict) and c.get('type') == 'Pretrained']


def _checkpoint_entries(cfg: dict) -> dict:
    """The state dict ``Pretrained`` ``cfg`` loads (``prefix`` stripped, as mmengine does)."""
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_with_prefix
    location = cfg.get('map_location', 'cpu')
    if cfg.get('prefix'):
        return _load_checkpoint_with_prefix(cfg['prefix'], cfg['checkpoint'], location)
    checkpoint = _load_checkpoint(cfg['checkpoint'], location)
    state = checkpoint.get('state_dict', checkpoint)
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def load_pretrained_entries(host: nn.Module, added: Added) -> None:
    """Load into the added modules their entries of the ``Pretrained`` checkpoints of the host
    and its modules (inner ones first, outer ones last: mmengine's order, the outer one wins)."""
    for module in reversed(list(host.modules())):
        cfgs = _pretrained_cfgs(module)
        if not cfgs:
            continue
        paths = {id(m): name for name, m in module.named_modules()}
        inside = [(f'{paths[id(p)]}.{name}'.lstrip('.'), p._modules[name]) for p, name in added
                  if id(p) in paths]
        for cfg in cfgs if inside else []:
            entries = _checkpoint_entries(cfg)
            for path, child in inside:
                own = {k[len(path) + 1:]: v for k, v in entries.items()
                       if k.startswith(path + '.')}
                if own:
                    child.load_state_dict(own, strict=False)


class InitSite(Site):
    """Routes ``host.init_weights``: the host initialises as without the added modules, then
    each group of added modules with its own seed (see the module docstring)."""

    method = 'init_weights'

    def __init__(self, host: nn.Module) -> None:
        super().__init__(host)
        self.groups: List[Tuple[int, Added]] = []  # (seed, added modules), one per attach

    def __call__(self, *args, **kwargs):
        groups = [(seed, [(p, name) for p, name in group if p._modules.get(name) is not None])
                  for seed, group in self.groups]  # (a converter may have removed some)
        added = [entry for _, group in groups for entry in group]
        with detached(added):
            result = self.original(*args, **kwargs)
        for seed, group in groups:
            with isolated_rng(seed):
                for parent, name in group:
                    own_init(parent._modules[name])
        load_pretrained_entries(self.host, added)
        return result


Attach = Callable[[nn.Module, dict], list]


def keep_host_rng(name: str, attach: Attach) -> Attach:
    """``attach`` for the regularizer key ``name``, building and initialising what it adds
    without touching the host's random stream (see the module docstring)."""

    @functools.wraps(attach)
    def attach_keeping_host_rng(model: nn.Module, cfg: dict) -> list:
        seed = derived_seed(torch.initial_seed(), name)
        before = {id(m) for m in model.modules()}
        with isolated_rng(seed):
            rows = attach(model, cfg)
        added = added_children(model, before)
        if added and callable(getattr(model, 'init_weights', None)):
            InitSite.install(model).groups.append((seed, added))
        return rows

    return attach_keeping_host_rng
