"""Attention mechanisms, one file each: the child module, its attention stage and its key.

Each file registers an :class:`~mmvitreg.regularizers.stage.AttentionStage` (how
:func:`~mmvitreg.regularizers.attention.attend` applies the mechanism) and a ``Regularized`` key
(``@register_regularizer``: where the mechanism goes). :func:`import_all` imports every module of
this package, in name order, when the package is imported, so a new attention mechanism is one
new file and nothing else. Files here need torch (and timm) only.
"""
import importlib
import pkgutil
from typing import List

__all__ = ['import_all']


def import_all() -> List[str]:
    """Import every module of this package (names starting with ``_`` excepted); their names."""
    names = sorted(info.name for info in pkgutil.iter_modules(__path__)
                   if not info.name.startswith('_'))
    for name in names:
        importlib.import_module(f'{__name__}.{name}')
    return names


import_all()
