"""Attention mechanisms, one file each: the child module, its attention stage and its key.

Each file registers an :class:`~mmvitreg.regularizers.stage.AttentionStage` (how
:func:`~mmvitreg.regularizers.attention.attend` applies the mechanism) and a ``Regularized`` key
(``@register_regularizer``: where the mechanism goes). Every module of this package is imported
here, in name order, so a new attention mechanism is one new file and nothing else. Files here
need torch (and timm) only.
"""
import importlib
import pkgutil

__all__ = []

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if not _info.name.startswith('_'):
        importlib.import_module(f'{__name__}.{_info.name}')
