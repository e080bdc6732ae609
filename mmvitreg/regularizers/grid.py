"""Where the keys of a host's attention lie: extra tokens the host declares, or the config says.

Mechanisms that need the 2-D layout of the keys (DropKey-Block/Cross) get it from the attention
site as a :class:`~mmvitreg.ops.token_grid.TokenGrid`. A site knows it from the host itself
(mmvitreg's own attention modules pass it), from the number of extra tokens (class, distillation,
register tokens) that an enclosing model declares before a square patch grid, or from the
config's ``grid=dict(extra_tokens=..., size=(H, W))`` for hosts that declare neither.

Declarations read (nearest enclosing module first):

* ``num_extra_tokens`` (mmpretrain ViTs: class + distillation tokens);
* ``num_prefix_tokens`` (timm ViTs: class + register tokens);
* ``num_register_tokens`` (DINOv2): plus ``num_tokens`` class tokens (DINOv2 sets 1), or one class
  token when the module has a ``cls_token``.
"""
from typing import NamedTuple, Optional, Tuple

import torch.nn as nn

__all__ = ['GridOption', 'declared_extra_tokens', 'extra_tokens_of', 'grid_option',
           'EXTRA_TOKEN_ATTRIBUTES', 'patch_grid_of']

EXTRA_TOKEN_ATTRIBUTES = ('num_extra_tokens', 'num_prefix_tokens',
                          'num_tokens + num_register_tokens')


def _int_attr(module: nn.Module, name: str) -> Optional[int]:
    value = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def declared_extra_tokens(module: nn.Module) -> Optional[int]:
    """The leading non-grid tokens ``module`` declares (see the module docstring), or None."""
    for name in ('num_extra_tokens', 'num_prefix_tokens'):
        value = _int_attr(module, name)
        if value is not None:
            return value
    registers = _int_attr(module, 'num_register_tokens')
    if registers is None:
        return None
    classes = _int_attr(module, 'num_tokens')
    if classes is None:
        classes = int(getattr(module, 'cls_token', None) is not None)
    return classes + registers


def extra_tokens_of(model: nn.Module, path: str) -> Optional[int]:
    """Leading non-grid tokens seen by the module at ``path`` of ``model``: the declaration of its
    nearest enclosing module that has one; None when none does."""
    parts = path.split('.') if path else []
    for i in range(len(parts) - 1, -1, -1):
        value = declared_extra_tokens(model.get_submodule('.'.join(parts[:i])))
        if value is not None:
            return value
    return None


def _declared_patch_grid(module: nn.Module) -> Optional[Tuple[int, int]]:
    """The patch grid a backbone is built for: ``patch_resolution`` (mmpretrain ViTs) or
    ``patch_embed.grid_size`` (timm ViTs); None when it declares neither."""
    for value in (getattr(module, 'patch_resolution', None),
                  getattr(getattr(module, 'patch_embed', None), 'grid_size', None)):
        if (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, int) and v > 0 for v in value)):
            return int(value[0]), int(value[1])
    return None


def patch_grid_of(model: nn.Module, path: str) -> Optional[Tuple[int, int]]:
    """The patch grid of the nearest module enclosing ``path`` that declares one (the grid of
    its build-time image size), or None."""
    parts = path.split('.') if path else []
    for i in range(len(parts) - 1, -1, -1):
        value = _declared_patch_grid(model.get_submodule('.'.join(parts[:i])))
        if value is not None:
            return value
    return None


class GridOption(NamedTuple):
    """The config's key layout of an attention: ``extra_tokens`` leading tokens (None: what the
    host declares, else 0) followed by a ``size`` grid (None: square)."""
    extra_tokens: Optional[int] = None
    size: Optional[Tuple[int, int]] = None


def grid_option(value, mechanism: str) -> Optional[GridOption]:
    """Validate a ``grid=dict(extra_tokens=N, size=(H, W))`` option (None passes through)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - {'extra_tokens', 'size'}:
        raise ValueError(f'{mechanism} grid must be a dict with extra_tokens and/or size, e.g. '
                         f'grid=dict(extra_tokens=1, size=(14, 14)), got {value!r}')
    extra = value.get('extra_tokens')
    if extra is not None and (isinstance(extra, bool) or not isinstance(extra, int)
                              or extra < 0):
        raise ValueError(f'{mechanism} grid extra_tokens must be an integer >= 0, got {extra!r}')
    size = value.get('size')
    if size is not None:
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                           for s in size)):
            raise ValueError(f'{mechanism} grid size must be (H, W) with integers >= 1, '
                             f'got {value["size"]!r}')
        size = (int(size[0]), int(size[1]))
    return GridOption(extra, size)
