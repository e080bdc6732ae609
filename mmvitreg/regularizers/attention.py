"""Attention sites: how attention mechanisms reach a host attention module, and how they compose.

Every supported host attention class has one :class:`AttentionSite` subclass (registered with
:func:`register_attention_site`) that knows where the host computes ``softmax(q k^T * s) v``:

* hosts that already route that step through an overridable attribute or method get a site on
  it with no copied code: mmpretrain ``MultiheadAttention`` (its ``scaled_dot_product_attention``
  instance attribute) and mmvitreg's own attention modules (their ``attention`` method);
* hosts that compute it inside ``forward`` (timm ``Attention``, mmcv ``MultiheadAttention`` of
  mmdet DETR layers) get a site on ``forward`` that reproduces the host's forward up to that step;
  while no mechanism is active it calls the host's own ``forward`` (outputs bit-identical).

Mechanisms live in well-named children of the host attention module, and
:func:`attend` composes them by one explicit rule::

    logits = q k^T * scale (+ host mask)        # host
    logits[dropped] = -inf                      # ``dropkey``     (DropKey: before the softmax)
    probs  = dropout(softmax(logits))           # host
    probs  = mix_heads(probs)                   # ``reattention`` (Re-attention: after it)
    out    = probs v

with the fast paths ``F.scaled_dot_product_attention`` (no mechanism active) and DropKey's own
kernel (DropKey alone). A site also records attention probabilities for diagnostics
(:func:`attention_probs`).
"""
import fnmatch
import functools
from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmvitreg.ops.token_grid import TokenGrid, square_grid
from .site import Site, site_of

__all__ = [
    'AttentionSite', 'SlotAttentionSite', 'AttentionSlot', 'ATTENTION_SITES', 'register_attention_site',
    'attention_site_class', 'attend', 'find_attention_modules', 'match_target',
    'attention_probs', 'active_mechanisms', 'AttentionRecorder', 'install_attention_site',
    'supported_attention_types', 'DROPKEY_CHILD', 'REATTENTION_CHILD'
]

#: child names of the attention-module mechanisms read by :func:`attend`
DROPKEY_CHILD = 'dropkey'
REATTENTION_CHILD = 'reattention'


def _child(module: nn.Module, name: str) -> Optional[nn.Module]:
    return module._modules.get(name)


def active_mechanisms(module: nn.Module) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
    """``(dropkey if active else None, reattention or None)`` of an attention module."""
    dropkey = _child(module, DROPKEY_CHILD)
    if dropkey is not None and not dropkey.active:
        dropkey = None
    return dropkey, _child(module, REATTENTION_CHILD)


def attend(module: nn.Module,
           q: Tensor,
           k: Tensor,
           v: Tensor,
           attn_mask: Optional[Tensor] = None,
           dropout_p: float = 0.0,
           scale: Optional[float] = None,
           grid: Optional[TokenGrid] = None,
           recorder: Optional['AttentionRecorder'] = None) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` of ``module`` with its mechanisms composed.

    ``attn_mask`` follows ``F.scaled_dot_product_attention`` (bool True = may attend, or an
    additive float bias); ``dropout_p`` is the host's attention dropout (0 in eval); ``grid``
    the layout of the keys (None = not an image grid). ``recorder`` receives the maps of its
    ``stage``; DropKey stays on only for recorders that keep gradients (training-time losses).
    """
    dropkey, mixing = active_mechanisms(module)
    if recorder is not None and recorder.detach:
        dropkey = None
    if mixing is None and recorder is None:
        if dropkey is not None:
            return dropkey(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
                           grid=grid)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              scale=scale)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float('-inf'))
        else:
            logits = logits + attn_mask
    if dropkey is not None:
        keep = dropkey.keep_mask(q, k, attn_mask=attn_mask, grid=grid)
        logits = logits.masked_fill(~keep, float('-inf'))
    probs = logits.softmax(dim=-1)
    if recorder is not None and recorder.stage == 'softmax':
        recorder.add(probs)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    if mixing is not None:
        probs = mixing(probs)
    if recorder is not None and recorder.stage == 'mixed':
        recorder.add(probs)
    return probs @ v


class AttentionRecorder:
    """Collects attention maps ``(B, heads, Nq, Nk)`` of the calls of one attention site.

    ``stage='softmax'``: the probabilities after the host's masks, before attention dropout;
    ``stage='mixed'``: the maps multiplied with ``V`` (after Re-attention's head mixing, when
    present; after dropout in training). ``detach=True`` (diagnostics) records without gradients
    and with DropKey off; ``detach=False`` (training losses) keeps both.
    """

    STAGES = ('softmax', 'mixed')

    def __init__(self, stage: str = 'softmax', detach: bool = True) -> None:
        if stage not in self.STAGES:
            raise ValueError(f'attention map stage must be one of {self.STAGES}, got {stage!r}')
        self.stage = stage
        self.detach = detach
        self.maps: List[Tensor] = []

    def add(self, probs: Tensor) -> None:
        self.maps.append(probs.detach() if self.detach else probs)


class AttentionSite(Site):
    """Base class of the per-host attention sites.

    Subclasses implement :meth:`__call__` with the host's call signature and end in
    :func:`attend`; :attr:`grid_known` says whether the site can tell the key grid (DropKey-Block
    and -Cross need it). ``num_extra_tokens`` is the number of leading non-grid tokens given at
    installation (e.g. a ViT's class token) for hosts that do not know it themselves.
    """

    def __init__(self, host: nn.Module, num_extra_tokens: Optional[int] = None) -> None:
        super().__init__(host)
        self.num_extra_tokens = num_extra_tokens
        self.recorder: Optional[AttentionRecorder] = None

    @property
    def grid_known(self) -> bool:
        """Whether the keys' grid is known: by default when the number of extra tokens before a
        square patch grid was given at installation (ViT-family self-attention)."""
        return self.num_extra_tokens is not None

    def num_heads(self) -> int:
        return int(self.host.num_heads)

    def head_dim(self) -> int:
        return int(getattr(self.host, 'head_dims', None) or self.host.head_dim)

    @property
    def active(self) -> bool:
        dropkey, mixing = active_mechanisms(self.host)
        return dropkey is not None or mixing is not None or self.recorder is not None

    def square_grid(self, num_keys: int) -> Optional[TokenGrid]:
        """Keys = ``num_extra_tokens`` extra tokens + a square patch grid (ViT self-attention);
        None when they are not (DropKey-Block/Cross then refuse the call)."""
        if self.num_extra_tokens is None:
            return None
        return square_grid(num_keys, self.num_extra_tokens)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return attend(self.host, q, k, v, recorder=self.recorder, **kwargs)


class SlotAttentionSite(AttentionSite):
    """Site on a host attribute/method that *is* the attention step (no copied forward).

    ``method`` names it; it is called as ``slot(q, k, v, attn_mask=None, dropout_p=0.0,
    scale=None, grid=None)`` (unused keywords may be absent). mmvitreg's own attention modules
    define ``attention(q, k, v, *, attn_mask, dropout_p, scale, grid)`` and get this site.
    """

    method = 'attention'
    grid_known = True

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None,
                 dropout_p: float = 0.0, scale: Optional[float] = None,
                 grid: Optional[TokenGrid] = None) -> Tensor:
        if not self.active:
            return self.original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
                                 grid=grid)
        return self.attend(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
                           grid=grid)


#: host attention class -> site class
ATTENTION_SITES: Dict[type, Type[AttentionSite]] = {}


class AttentionSlot:
    """Base of mmvitreg's own attention modules: :meth:`attention` is their softmax step.

    Subclasses compute ``q, k, v`` and call ``self.attention(..., grid=TokenGrid(...))``; the
    :class:`SlotAttentionSite` (registered for this class, so for every subclass) routes it.
    """

    def attention(self, q: Tensor, k: Tensor, v: Tensor, *, attn_mask: Optional[Tensor] = None,
                  dropout_p: float = 0.0, scale: Optional[float] = None,
                  grid: Optional[TokenGrid] = None) -> Tensor:
        """Plain SDPA; the key ``grid`` is for the mechanisms routed here by the site."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              scale=scale)


def register_attention_site(*host_classes: type) -> Callable:
    """Class decorator: ``site_cls`` routes instances of ``host_classes`` (and subclasses)."""

    def _register(site_cls: Type[AttentionSite]) -> Type[AttentionSite]:
        for cls in host_classes:
            ATTENTION_SITES[cls] = site_cls
        return site_cls

    return _register


ATTENTION_SITES[AttentionSlot] = SlotAttentionSite


def attention_site_class(module: nn.Module) -> Optional[Type[AttentionSite]]:
    """The site class of ``module`` (nearest registered class in its MRO), or None."""
    for cls in type(module).__mro__:
        if cls in ATTENTION_SITES:
            return ATTENTION_SITES[cls]
    return None


def match_target(name: str, target: str) -> bool:
    """Whether module path ``name`` belongs to ``target``.

    ``''`` matches everything; a target with ``*``/``?``/``[`` is an ``fnmatch`` pattern on the
    full path; otherwise its dot-separated parts must appear in order among the path's parts, the
    first one at the start: ``'decoder.self_attn'`` matches ``'decoder.layers.3.self_attn'``,
    ``'encoder'`` matches ``'encoder.layers.0.self_attn'``, ``'layers.11'`` only that layer.
    """
    if not target:
        return True
    if any(ch in target for ch in '*?['):
        return fnmatch.fnmatchcase(name, target)
    want = target.split('.')
    parts = name.split('.')
    if not parts or parts[0] != want[0]:
        return False
    i = 1
    for w in want[1:]:
        while i < len(parts) and parts[i] != w:
            i += 1
        if i == len(parts):
            return False
        i += 1
    return True


@functools.lru_cache(maxsize=None)
def _deformable_attention_types() -> Tuple[type, ...]:
    """mmcv's deformable attention class (looked up once; none on torch-only installs)."""
    try:
        from mmcv.ops import MultiScaleDeformableAttention
    except ImportError:
        return ()
    return (MultiScaleDeformableAttention, )


def _is_deformable(module: nn.Module) -> bool:
    return isinstance(module, _deformable_attention_types())


def find_attention_modules(model: nn.Module, target: str = '',
                           mechanism: str = 'this mechanism') -> List[Tuple[str, nn.Module]]:
    """Supported attention modules under ``target`` in definition (= depth) order.

    Modules nested inside an already found attention are skipped. Deformable attention (no
    softmax over keys) under the target is refused with one error naming it.
    """
    found: List[Tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if not match_target(name, target):
            continue
        if any(name.startswith(n + '.') for n, _ in found):
            continue
        if _is_deformable(mod):
            raise ValueError(
                f'{mechanism} needs a softmax over keys, but {type(mod).__name__} at '
                f'{name or "<root>"!r} is deformable attention (sampled points, no key softmax); '
                'restrict `targets` to softmax attention layers')
        if attention_site_class(mod) is not None:
            found.append((name, mod))
    return found


def supported_attention_types() -> List[str]:
    return sorted({c.__name__ for c in ATTENTION_SITES})


def install_attention_site(module: nn.Module,
                           num_extra_tokens: Optional[int] = None) -> AttentionSite:
    """Install (or return) the attention site of ``module``."""
    site_cls = attention_site_class(module)
    if site_cls is None:
        raise ValueError(f'{type(module).__name__} is not a supported attention module; '
                         f'supported: {supported_attention_types()}')
    site = site_of(module, site_cls)
    if site is None:
        site = site_cls.install(module, num_extra_tokens=num_extra_tokens)
    elif num_extra_tokens is not None:
        site.num_extra_tokens = num_extra_tokens
    return site


def attention_probs(module: nn.Module, *args, stage: str = 'softmax',
                    **kwargs) -> Tuple[object, List[Tensor]]:
    """Run ``module`` (a supported attention) and return ``(output, maps)``.

    ``maps`` holds the attention maps ``(B, heads, Nq, Nk)`` of every attention step of the call
    at ``stage`` (see :class:`AttentionRecorder`; ``'mixed'`` gives Re-attention's re-generated
    maps); DropKey is off while recording. A site installed only for this call is removed.
    """
    site_cls = attention_site_class(module)
    if site_cls is None:
        raise ValueError(f'{type(module).__name__} is not a supported attention module; '
                         f'supported: {supported_attention_types()}')
    site = site_of(module, site_cls)
    temporary = site is None
    if temporary:
        site = site_cls.install(module)
    recorder = site.recorder = AttentionRecorder(stage)
    try:
        out = module.forward(*args, **kwargs)  # not module(...): callers may be its own hooks
    finally:
        site.recorder = None
        if temporary:
            site.remove()
    return out, recorder.maps
