"""``Regularized``: switch mmvitreg regularizers on for *any* registered model from a config.

A config turns a mechanism on by changing the ``type`` of an existing model (or backbone) dict
to ``'Regularized'``, naming the original type in ``host`` and adding one key per mechanism; every
other key of the inherited dict is passed to the host unchanged::

    model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                               dropkey=dict(ratio=0.1, schedule='decrease')))

The host is built exactly as before and then modified in place by each regularizer key of
:data:`mmvitreg.regularizers.REGULARIZERS` (see :mod:`mmvitreg.regularizers` for how a mechanism
reaches a host). The returned object is the host itself: same class, same parameter names, so
checkpoints and converters of the host keep working.
"""
import inspect
from typing import Callable, Type, Union

import torch.nn as nn

from mmvitreg.registry import MODELS
from mmvitreg.regularizers import REGULARIZERS, apply_regularizers

__all__ = ['Regularized', 'build_regularized']


def _own_arguments(registry, host) -> set:
    """Names of the host's explicit constructor arguments (a regularizer key must not be one)."""
    cls = registry.get(host) if isinstance(host, str) else host
    if cls is None:
        return set()
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_regularized(registry, host: Union[str, Type[nn.Module]], **kwargs) -> nn.Module:
    """Build ``host`` from ``registry`` with the non-regularizer kwargs, then apply the rest."""
    if not host:
        raise ValueError("Regularized needs `host`, the type of the model to regularize, "
                         "e.g. host='VisionTransformer'")
    reg_cfgs = {k: kwargs.pop(k) for k in list(kwargs) if k in REGULARIZERS}
    collisions = sorted(set(reg_cfgs) & _own_arguments(registry, host))
    if collisions:
        name = host if isinstance(host, str) else host.__name__
        raise ValueError(f'{name} takes its own argument(s) {collisions}, which Regularized '
                         f'would also apply: set them on the host only (e.g. '
                         f'dict(type={name!r}, {collisions[0]}=...)), not as Regularized keys')
    try:
        model = registry.build(dict(type=host, **kwargs))
    except TypeError as err:
        unknown = [k for k in kwargs if f"'{k}'" in str(err)]
        if unknown:
            raise TypeError(f'{err}; if {unknown[0]!r} was meant as a regularizer, the known '
                            f'regularizer keys are {sorted(REGULARIZERS)}') from err
        raise
    return apply_regularizers(model, **reg_cfgs)


def _registered_builder(registry) -> Callable[..., nn.Module]:
    # One builder per toolbox registry: an unprefixed ``host`` resolves in the registry where
    # ``Regularized`` itself was found (mmpretrain inside an mmpretrain model, mmdet inside an
    # mmdet one), which mmengine's default scope alone does not tell for nested builds.
    def Regularized(host: Union[str, Type[nn.Module]] = None, **kwargs) -> nn.Module:
        """Build ``host`` with the remaining kwargs, then apply the regularizer keys.

        Keys naming a registered regularizer are taken out; all other keys go to the host.
        """
        return build_regularized(registry, host, **kwargs)

    return Regularized


for _target in MODELS.targets:
    _target.register_module(name='Regularized', module=_registered_builder(_target))


def Regularized(host: Union[str, Type[nn.Module]] = None, **kwargs) -> nn.Module:
    """Python entry point: like the registered type, resolving ``host`` in the current scope."""
    return build_regularized(MODELS.current(), host, **kwargs)
