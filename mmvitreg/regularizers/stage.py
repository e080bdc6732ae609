"""Attention stages: how an attention mechanism plugs into the attention step of a host.

An attention mechanism keeps its state in one child module of the host attention module (e.g.
``dropkey``, ``reattention``) and registers one :class:`AttentionStage` for that child name. The
stage says *where* in the attention step the mechanism acts (its :attr:`~AttentionStage.phase`)
and *what* it does there (:meth:`~AttentionStage.apply`); :func:`~.attention.attend` composes the
active stages of a module by phase, in this order::

    logits = q k^T * scale (+ host mask)
    logits = apply(logits)   # 'logits' stages: before the softmax
    probs  = softmax(logits)
    probs  = dropout(probs)  # the host's attention dropout
    probs  = apply(probs)    # 'probs' stages: on the probabilities
    probs  = apply(probs)    # 'mixing' stages: maps combined across heads/keys, after 'probs'
    out    = probs @ v
    out    = apply(out)      # 'output' stages

Stages of the same phase apply in the order their children were added to the host (the order of
the keys in the config). Optional fast paths, which give the same result as the explicit rule:

* :meth:`~AttentionStage.dropout_p`: a leading 'probs' stage that *is* attention dropout is
  folded into the host's dropout (two independent dropouts p and q are one of
  ``1 - (1 - p)(1 - q)``), so fused kernels compute it;
* :attr:`~AttentionStage.own_kernel`: a mechanism that computes the whole step itself
  (:meth:`~AttentionStage.kernel`, e.g. DropKey's memory-efficient kernels) is used for it when it
  is the only active stage before the output phase.

Torch only; the stages themselves live in :mod:`mmvitreg.regularizers.stages`, one file each.
"""
from typing import Dict, NamedTuple, Optional, Type

import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.token_grid import TokenGrid

__all__ = ['ATTENTION_PHASES', 'ATTENTION_STAGES', 'AttentionCall', 'AttentionStage',
           'register_attention_stage']

#: the phases of the attention step, in the order :func:`~.attention.attend` applies them
ATTENTION_PHASES = ('logits', 'probs', 'mixing', 'output')


class AttentionCall(NamedTuple):
    """One call of an attention step, as a site gives it to :func:`~.attention.attend`.

    ``attn_mask`` follows ``F.scaled_dot_product_attention`` (bool True = may attend, or an
    additive float bias); ``dropout_p`` is the host's attention dropout (0 in eval); ``scale``
    None means ``d ** -0.5``; ``grid`` is where the keys lie on the image (None: unknown).
    """
    q: Tensor
    k: Tensor
    v: Tensor
    attn_mask: Optional[Tensor] = None
    dropout_p: float = 0.0
    scale: Optional[float] = None
    grid: Optional[TokenGrid] = None


class AttentionStage:
    """How :func:`~.attention.attend` applies the mechanism held in the child :attr:`child`.

    Subclasses set :attr:`child` and :attr:`phase`, implement :meth:`apply` and are registered
    with :func:`register_attention_stage`; the mechanism module itself can be any ``nn.Module``.
    """

    #: the name of the host attention's child module holding the mechanism
    child: str = ''
    #: one of :data:`ATTENTION_PHASES`
    phase: str = ''
    #: a training-time random mechanism: off while diagnostics record attention maps
    stochastic: bool = False
    #: :meth:`kernel` computes the whole attention step (used when this is the only stage)
    own_kernel: bool = False

    def active(self, mechanism: nn.Module) -> bool:
        """Whether the mechanism acts on this call (default: its ``active`` flag, else True)."""
        return bool(getattr(mechanism, 'active', True))

    def apply(self, mechanism: nn.Module, x: Tensor, call: AttentionCall) -> Tensor:
        """The tensor of this stage's phase (logits, probabilities or output) after it."""
        raise NotImplementedError

    def dropout_p(self, mechanism: nn.Module) -> Optional[float]:
        """For a 'probs' stage that is exactly dropout of the attention probabilities: its drop
        probability (attend folds it into the host's dropout); None otherwise."""
        return None

    def kernel(self, mechanism: nn.Module, call: AttentionCall) -> Tensor:
        """``softmax(...) v`` of the whole call with this mechanism (needs :attr:`own_kernel`)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}(child={self.child!r}, phase={self.phase!r})'


def _qualified(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


#: child name -> the stage applying it
ATTENTION_STAGES: Dict[str, AttentionStage] = {}


def register_attention_stage(stage_cls: Type[AttentionStage]) -> Type[AttentionStage]:
    """Class decorator: register (an instance of) ``stage_cls`` for its child name."""
    if stage_cls.phase not in ATTENTION_PHASES:
        raise ValueError(f'{stage_cls.__name__}.phase must be one of {ATTENTION_PHASES}, '
                         f'got {stage_cls.phase!r}')
    if not stage_cls.child or not stage_cls.child.isidentifier():
        raise ValueError(f'{stage_cls.__name__}.child must name a child module, '
                         f'got {stage_cls.child!r}')
    current = ATTENTION_STAGES.get(stage_cls.child)
    if current is not None and _qualified(type(current)) != _qualified(stage_cls):
        raise KeyError(f'attention stage child {stage_cls.child!r} is already registered by '
                       f'{type(current).__name__}')
    ATTENTION_STAGES[stage_cls.child] = stage_cls()
    return stage_cls

