"""Registries of mmvitreg.

mmvitreg is a plugin for two OpenMMLab toolboxes whose configs live in different default scopes:
``mmpretrain`` (classification) and ``mmdet`` (detection, HOI detection). Every public mmvitreg
type is registered under the *same name* in the matching registry of **both** toolboxes, so a
config refers to it without a scope prefix whatever its ``default_scope`` is, and a module nested
inside a module of the other toolbox (e.g. an mmvitreg attention inside an ``mmpretrain.``
backbone inside an mmdet detector) is found as well: mmengine switches the scope to the one of the
module being built, and the name exists there too.

Usage inside the package::

    from mmvitreg.registry import MODELS

    @MODELS.register_module()
    class MyLayer(nn.Module): ...

The names registered here are the project's public API; they are listed in the README.
"""
from typing import Callable, List, Optional, Type, Union

from mmdet import registry as mmdet_registry
from mmengine.registry import DefaultScope, Registry
from mmpretrain import registry as mmpretrain_registry

__all__ = ['MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'HOOKS', 'VISUALIZERS',
           'MultiScopeRegistry']


class MultiScopeRegistry:
    """Registers one object under one name in several mmengine registries at once.

    ``get``/``build`` use the first (primary) registry; registration goes to all of them.
    """

    def __init__(self, name: str, targets: List[Registry]):
        self.name = name
        self.targets = targets

    def register_module(self,
                        name: Optional[Union[str, List[str]]] = None,
                        force: bool = False,
                        module: Optional[Type] = None) -> Union[Type, Callable]:
        if module is not None:
            for target in self.targets:
                target.register_module(name=name, force=force, module=module)
            return module

        def _register(obj):
            for target in self.targets:
                target.register_module(name=name, force=force, module=obj)
            return obj

        return _register

    def current(self) -> Registry:
        """The target registry of the current default scope (mmpretrain if none is set)."""
        scope = DefaultScope.get_current_instance()
        for target in self.targets:
            if scope is not None and target.scope == scope.scope_name:
                return target
        return self.targets[0]

    def get(self, key: str):
        return self.current().get(key)

    def build(self, cfg, *args, **kwargs):
        return self.current().build(cfg, *args, **kwargs)

    def __contains__(self, key: str) -> bool:
        return all(key in target for target in self.targets)

    def __repr__(self) -> str:
        scopes = ', '.join(f'{t.scope}::{t.name}' for t in self.targets)
        return f'MultiScopeRegistry({self.name} -> {scopes})'


def _both(name: str) -> MultiScopeRegistry:
    return MultiScopeRegistry(
        name, [getattr(mmpretrain_registry, name), getattr(mmdet_registry, name)])


MODELS = _both('MODELS')
DATASETS = _both('DATASETS')
TRANSFORMS = _both('TRANSFORMS')
METRICS = _both('METRICS')
HOOKS = _both('HOOKS')
VISUALIZERS = _both('VISUALIZERS')
