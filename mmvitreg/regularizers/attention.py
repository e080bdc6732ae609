"""Attention sites: how attention mechanisms reach a host attention module, and how they compose.

Every supported host attention class has one :class:`AttentionSite` subclass (registered with
:func:`register_attention_site`) that knows where the host computes ``softmax(q k^T * s) v``:

* hosts that already route that step through an overridable attribute or method get a site on
  it with no copied code: mmpretrain ``MultiheadAttention`` (its ``scaled_dot_product_attention``
  instance attribute) and mmvitreg's own attention modules (their ``attention`` method);
* hosts that compute it inside ``forward`` (timm ``Attention``, mmcv ``MultiheadAttention`` of
  mmdet DETR layers) get a site on ``forward`` that reproduces the host's forward up to that step;
  while no mechanism is active it calls the host's own ``forward`` (outputs bit-identical).

Mechanisms live in well-named children of the host attention module, each applied by its
registered attention stage (:mod:`.stage`); :func:`attend` composes the active stages by phase and
takes one of three paths (:func:`attention_plan`): ``F.scaled_dot_product_attention`` when no
stage acts before the output (eval outputs are the host's own), a mechanism's own kernel when it
is the only one, else the explicit rule of :mod:`.stage`. A site also records attention
probabilities for diagnostics (:func:`attention_probs`).
"""
import fnmatch
import functools
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmvitreg.ops.token_grid import TokenGrid, square_grid
from .grid import GridOption
from .site import Site, site_of
from .stage import ATTENTION_PHASES, ATTENTION_STAGES, AttentionCall, AttentionStage

__all__ = [
    'AttentionSite', 'SlotAttentionSite', 'AttentionSlot', 'ATTENTION_SITES',
    'register_attention_site', 'attention_site_class', 'attend', 'attention_plan',
    'AttentionPlan', 'active_stages', 'add_attention_stage', 'find_attention_modules',
    'match_target', 'attention_probs', 'AttentionRecorder', 'install_attention_site',
    'supported_attention_types'
]

Stages = Tuple[Tuple[AttentionStage, nn.Module], ...]


def active_stages(module: nn.Module, recorder: Optional['AttentionRecorder'] = None) -> Stages:
    """``(stage, mechanism)`` of the active mechanisms of ``module`` in composition order: by
    phase, then in the order the children were added. A recorder for diagnostics
    (``detach=True``) switches the stochastic ones off."""
    found = []
    for name, mechanism in module._modules.items():
        stage = ATTENTION_STAGES.get(name)
        if stage is None or mechanism is None:
            continue
        if recorder is not None and recorder.detach and stage.stochastic:
            continue
        if stage.active(mechanism):
            found.append((stage, mechanism))
    if len(found) < 2:
        return tuple(found)
    return tuple(pair for phase in ATTENTION_PHASES for pair in found if pair[0].phase == phase)


class AttentionPlan(NamedTuple):
    """How :func:`attend` computes one call.

    ``path``: ``'sdpa'`` (``F.scaled_dot_product_attention``), ``'explicit'`` (the composition
    rule on materialised maps) or the child name of the mechanism whose own kernel computes the
    step (e.g. ``'dropkey'``). ``stages``: the stages applied (folded dropouts excluded);
    ``dropout_p``: the host's attention dropout with the folded ones.
    """
    path: str
    stages: Stages
    dropout_p: float


def attention_plan(module: nn.Module, dropout_p: float = 0.0,
                   recorder: Optional['AttentionRecorder'] = None) -> AttentionPlan:
    """The :class:`AttentionPlan` of a call of ``module`` with the host's ``dropout_p``."""
    stages = []
    keep = 1.0 - dropout_p
    folded = False
    leading = True  # no 'probs' stage kept yet: a dropout here directly follows the host's
    for stage, mechanism in active_stages(module, recorder):
        p = stage.dropout_p(mechanism) if stage.phase == 'probs' and leading else None
        if p is not None:  # attention dropout right after the host's: one dropout
            keep *= 1.0 - p
            folded = True
            continue
        leading = leading and stage.phase != 'probs'
        stages.append((stage, mechanism))
    if folded:
        dropout_p = 1.0 - keep
    core = [stage for stage, _ in stages if stage.phase != 'output']
    if recorder is not None:
        path = 'explicit'
    elif not core:
        path = 'sdpa'
    elif len(core) == 1 and core[0].own_kernel:
        path = core[0].child
    else:
        path = 'explicit'
    return AttentionPlan(path, tuple(stages), dropout_p)


def attend(module: nn.Module,
           q: Tensor,
           k: Tensor,
           v: Tensor,
           attn_mask: Optional[Tensor] = None,
           dropout_p: float = 0.0,
           scale: Optional[float] = None,
           grid: Optional[TokenGrid] = None,
           recorder: Optional['AttentionRecorder'] = None) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` of ``module`` with its mechanisms' stages composed.

    ``attn_mask`` follows ``F.scaled_dot_product_attention`` (bool True = may attend, or an
    additive float bias); ``dropout_p`` is the host's attention dropout (0 in eval); ``grid``
    the layout of the keys (None = not an image grid). ``recorder`` receives the maps of its
    ``stage``; stochastic mechanisms stay on only for recorders that keep gradients
    (training-time losses).
    """
    plan = attention_plan(module, dropout_p, recorder)
    call = AttentionCall(q, k, v, attn_mask, plan.dropout_p, scale, grid)
    if plan.path == 'sdpa':
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=plan.dropout_p, scale=scale)
    elif plan.path == 'explicit':
        out = _explicit_attention(plan.stages, call, recorder)
    else:
        stage, mechanism = next(pair for pair in plan.stages if pair[0].phase != 'output')
        out = stage.kernel(mechanism, call)
    for stage, mechanism in plan.stages:
        if stage.phase == 'output':
            out = stage.apply(mechanism, out, call)
    return out


def _explicit_attention(stages: Stages, call: AttentionCall,
                        recorder: Optional['AttentionRecorder']) -> Tensor:
    """The composition rule of :mod:`.stage` up to ``probs @ v`` on materialised maps."""
    q, k, v, attn_mask, dropout_p, scale, _ = call
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float('-inf'))
        else:
            logits = logits + attn_mask
    for stage, mechanism in stages:
        if stage.phase == 'logits':
            logits = stage.apply(mechanism, logits, call)
    probs = logits.softmax(dim=-1)
    if recorder is not None and recorder.stage == 'softmax':
        recorder.add(probs)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    for stage, mechanism in stages:
        if stage.phase in ('probs', 'mixing'):
            probs = stage.apply(mechanism, probs, call)
    if recorder is not None and recorder.stage == 'mixed':
        recorder.add(probs)
    return probs @ v


class AttentionRecorder:
    """Collects attention maps ``(B, heads, Nq, Nk)`` of the calls of one attention site.

    ``stage='softmax'``: the probabilities after the host's masks, before attention dropout;
    ``stage='mixed'``: the maps multiplied with ``V`` (after the 'probs' and 'mixing' stages,
    e.g. Re-attention's head mixing; after dropout in training). ``detach=True`` (diagnostics)
    records without gradients and with the stochastic mechanisms (DropKey, attention dropout)
    off; ``detach=False`` (training losses) keeps both.
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
    :meth:`attend` with ``grid=self.key_grid(num_keys)``. The key grid (DropKey-Block and -Cross
    need it) comes from the config's ``grid`` option (:attr:`grid_option`), else from
    ``num_extra_tokens``, the leading non-grid tokens the enclosing model declares (e.g. a ViT's
    class token, see :mod:`.grid`), before a square patch grid.
    """

    def __init__(self, host: nn.Module, num_extra_tokens: Optional[int] = None) -> None:
        super().__init__(host)
        self.num_extra_tokens = num_extra_tokens
        self.grid_option: Optional[GridOption] = None
        self.recorder: Optional[AttentionRecorder] = None

    @property
    def grid_known(self) -> bool:
        """Whether the site can tell the keys' grid (from the config or the declared extra
        tokens before a square patch grid)."""
        return self.grid_option is not None or self.num_extra_tokens is not None

    @property
    def grid_missing(self) -> str:
        """What the site lacks to tell the keys' grid (for errors)."""
        return ('how many extra (class/register) tokens precede the patch grid is unknown: no '
                'enclosing module declares num_extra_tokens, num_prefix_tokens or '
                'num_register_tokens')

    def key_grid(self, num_keys: int,
                 host_grid: Optional[TokenGrid] = None) -> Optional[TokenGrid]:
        """Where the ``num_keys`` keys lie: the config's grid, else ``host_grid`` (given by the
        host), else the declared extra tokens + a square grid; None when unknown or not square
        (DropKey-Block/Cross then refuse the call)."""
        option = self.grid_option
        if option is None:
            if host_grid is not None or self.num_extra_tokens is None:
                return host_grid
            return square_grid(num_keys, self.num_extra_tokens)
        extra = option.extra_tokens
        if extra is None:
            extra = host_grid.num_extra_tokens if host_grid is not None else \
                (self.num_extra_tokens or 0)
        if option.size is not None:
            return TokenGrid(option.size, extra)
        return square_grid(num_keys, extra)

    def num_heads(self) -> int:
        return int(self.host.num_heads)

    def head_dim(self) -> int:
        return int(getattr(self.host, 'head_dims', None) or self.host.head_dim)

    @property
    def active(self) -> bool:
        return self.recorder is not None or bool(active_stages(self.host))

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
                           grid=self.key_grid(k.shape[-2], grid))


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


def install_attention_site(module: nn.Module, num_extra_tokens: Optional[int] = None,
                           grid: Optional[GridOption] = None) -> AttentionSite:
    """Install (or return) the attention site of ``module``; ``num_extra_tokens`` (declared by
    the enclosing model) and ``grid`` (the config's layout) update the site's key grid."""
    site_cls = attention_site_class(module)
    if site_cls is None:
        raise ValueError(f'{type(module).__name__} is not a supported attention module; '
                         f'supported: {supported_attention_types()}')
    site = site_of(module, site_cls)
    if site is None:
        site = site_cls.install(module, num_extra_tokens=num_extra_tokens)
    elif num_extra_tokens is not None:
        site.num_extra_tokens = num_extra_tokens
    if grid is not None:
        site.grid_option = grid
    return site


def add_attention_stage(module: nn.Module, child: str, mechanism: nn.Module) -> AttentionSite:
    """Add ``mechanism`` to the attention ``module`` as its child ``child`` (which names a
    registered stage) and route the module through its site: the one place where attention
    mechanisms are added to hosts. The mechanism moves to the host's device and dtype."""
    if child not in ATTENTION_STAGES:
        raise KeyError(f'no attention stage is registered for child {child!r} (register one '
                       'with @register_attention_stage)')
    if child in module._modules:
        raise ValueError(f'{type(module).__name__} already has a {child!r} child')
    site = install_attention_site(module)
    ref = next(module.parameters(), None)
    if ref is not None:
        mechanism.to(device=ref.device, dtype=ref.dtype)
    module.add_module(child, mechanism)
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
