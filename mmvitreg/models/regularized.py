"""``Regularized``: switch mmvitreg regularizers on for *any* registered model from a config.

A config turns a mechanism on by changing the ``type`` of an existing model (or backbone) dict
to ``'Regularized'``, naming the original type in ``host`` and adding one key per mechanism; every
other key of the inherited dict is passed to the host unchanged::

    model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                               dropkey=dict(ratio=0.1, schedule='decrease')))

The host is built exactly as before and then modified *in place* by each named regularizer
(attention modules gain a parameter-free DropKey, heads are swapped for re-attention, an
auxiliary loss is attached, ...). The returned object is the host itself, so parameter names,
checkpoints and converters of the host keep working.

Regularizers are entries of :data:`REGULARIZERS`; adding one is a function plus a decorator::

    @register_regularizer('mytrick', order=50)
    def apply_mytrick(model: nn.Module, cfg: dict) -> None: ...
"""
from typing import Callable, Dict, NamedTuple, Type, Union

import torch.nn as nn

from mmvitreg.registry import MODELS


class RegularizerEntry(NamedTuple):
    apply: Callable[[nn.Module, dict], None]
    order: int  # lower applies first (structural swaps before mask injection)


REGULARIZERS: Dict[str, RegularizerEntry] = {}


def register_regularizer(name: str, order: int = 100) -> Callable:
    """Decorator registering ``apply(model, cfg)`` as the regularizer config key ``name``."""

    def _register(fn: Callable[[nn.Module, dict], None]) -> Callable:
        if name in REGULARIZERS and REGULARIZERS[name].apply is not fn:
            raise KeyError(f'regularizer {name!r} is already registered')
        REGULARIZERS[name] = RegularizerEntry(fn, order)
        return fn

    return _register


def apply_regularizers(model: nn.Module, **regularizer_cfgs: dict) -> nn.Module:
    """Apply the named regularizers to ``model`` in place (in registry order) and return it.

    A value of ``None`` or ``False`` leaves that regularizer off, so base configs can carry the key.
    """
    unknown = sorted(set(regularizer_cfgs) - set(REGULARIZERS))
    if unknown:
        raise KeyError(f'unknown regularizer(s) {unknown}; available: {sorted(REGULARIZERS)}')
    active = [(name, cfg) for name, cfg in regularizer_cfgs.items()
              if cfg is not None and cfg is not False]
    for name, cfg in sorted(active, key=lambda item: REGULARIZERS[item[0]].order):
        REGULARIZERS[name].apply(model, dict(cfg) if cfg is not True else {})
    return model


def build_regularized(registry, host: Union[str, Type[nn.Module]], **kwargs) -> nn.Module:
    """Build ``host`` from ``registry`` with the non-regularizer kwargs, then apply the rest."""
    if not host:
        raise ValueError("Regularized needs `host`, the type of the model to regularize, "
                         "e.g. host='VisionTransformer'")
    reg_cfgs = {k: kwargs.pop(k) for k in list(kwargs) if k in REGULARIZERS}
    model = registry.build(dict(type=host, **kwargs))
    return apply_regularizers(model, **reg_cfgs)


def _registered_builder(registry) -> Callable[..., nn.Module]:
    # One builder per toolbox registry: an unprefixed ``host`` resolves in the registry where
    # ``Regularized`` itself was found (mmpretrain inside an mmpretrain model, mmdet inside an
    # mmdet one), which mmengine's default scope alone does not tell for nested builds.
    def Regularized(host: Union[str, Type[nn.Module]] = None, **kwargs) -> nn.Module:
        """Build ``host`` with the remaining kwargs, then apply the regularizer keys.

        Keys naming a registered regularizer (:data:`REGULARIZERS`) are taken out; all other
        keys go to the host.
        """
        return build_regularized(registry, host, **kwargs)

    return Regularized


for _target in MODELS.targets:
    _target.register_module(name='Regularized', module=_registered_builder(_target))


def Regularized(host: Union[str, Type[nn.Module]] = None, **kwargs) -> nn.Module:
    """Python entry point: like the registered type, resolving ``host`` in the current scope."""
    return build_regularized(MODELS.current(), host, **kwargs)


_EXTENDED: Dict[tuple, type] = {}


def extend_class(module: nn.Module, mixin: type) -> nn.Module:
    """Give ``module`` the behaviour of ``mixin`` by switching it to a cached subclass.

    Used where a regularizer must override a method of an arbitrary host (e.g. ``loss`` to add an
    auxiliary term) without a hand-written subclass per host. The subclass is created once per
    (mixin, host class) pair and stored in this module's namespace so pickling works.
    """
    base = type(module)
    if isinstance(module, mixin):
        return module
    key = (mixin, base)
    if key not in _EXTENDED:
        name = f'{mixin.__name__}_{base.__name__}'
        cls = type(name, (mixin, base), {'__module__': __name__})
        globals()[name] = cls
        _EXTENDED[key] = cls
    module.__class__ = _EXTENDED[key]
    return module
