"""Re-attention (DeepViT, Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer").

Paper (Eq. 5)::

    ReAttention(Q, K, V) = Norm(Theta^T Softmax(Q K^T / sqrt(d))) V

``Theta`` is a learnable ``H x H`` matrix that mixes the ``H`` attention maps of a layer across
heads (regenerating diverse maps against *attention collapse*), ``Norm`` a normalisation over the
head dimension.

Official code (``zhoudaquan/dvit_repo``, ``ReAttention``): ``Theta`` is a 1x1 ``nn.Conv2d(H, H)``
*with bias* (``reatten_matrix``), ``Norm`` is ``nn.BatchNorm2d(H)`` (``var_norm``, statistics over
the batch and both token axes per head) and both keep PyTorch's default initialisation. Two
details of the official code that the paper does not state, reproduced here:

* attention dropout is applied to the softmax probabilities *before* the head transform;
* DeepViT-S multiplies the normalised maps by ``head_dim ** -0.5`` (``transform_scale=True``).

This module provides

* :func:`reattend` - the pure tensor function (transform + norm + scale);
* :class:`ReAttention` - a registered subclass of mmpretrain ``MultiheadAttention`` with the
  *same* ``qkv``/``proj`` parameters (so it swaps into an mmpretrain ViT keeping its weights),
  plus ``reatten_matrix`` and ``var_norm`` named as in the official code;
* the ``reattention`` regularizer key of ``Regularized`` (order 10), which swaps the attention of
  all or the last ``K`` blocks of a host model in place.

DropKey composes with it (``Regularized(..., reattention=..., dropkey=...)``): DropKey masks the
*logits* before the softmax, Re-attention transforms the probabilities after it. DropKey runs a
host's attention through its *attention adapter* with DropKey as the ``softmax(q k^T) v`` core
(``mmvitreg/models/utils/attention_adapters.py``); the adapter registered here obtains the
core's (masked, dropped-out) probabilities by calling the core with ``V = I`` and then applies
the head transform, so any core composes without knowing about Re-attention. That costs one extra
``N x N x N`` product per head while DropKey is active (training only); evaluation, and training
without DropKey, use :meth:`ReAttention.forward` directly.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmpretrain.models.utils.attention import MultiheadAttention
from torch import Tensor

from mmvitreg.models.regularized import register_regularizer
from mmvitreg.models.utils.attention_adapters import (AttentionAdapter,
                                                      register_attention_adapter)
from mmvitreg.registry import MODELS

__all__ = ['reattend', 'ReAttention', 'apply_reattention', 'find_mha_modules',
           'reattention_layer_indices']

_TRANSFORM_INITS = ('default', 'identity')


def reattend(attn: Tensor,
             weight: Tensor,
             bias: Optional[Tensor] = None,
             norm: Optional[Callable[[Tensor], Tensor]] = None,
             scale: float = 1.0) -> Tensor:
    """Regenerate attention maps by mixing heads: ``norm(Theta^T attn + bias) * scale``.

    Args:
        attn: attention maps ``(B, H, N, M)`` - softmax probabilities (after attention dropout,
            as in the official code).
        weight: the head transform, ``(H, H)`` or a 1x1 conv weight ``(H, H, 1, 1)``; output head
            ``g`` is ``sum_h weight[g, h] * attn[:, h]`` (the paper's ``Theta^T``).
        bias: ``(H,)`` per-output-head bias (the official 1x1 conv has one) or ``None``.
        norm: normalisation over the head channel, e.g. an ``nn.BatchNorm2d(H)`` (official) or
            ``None`` for identity.
        scale: multiplies the normalised maps (``head_dim ** -0.5`` in DeepViT-S, else 1).

    Returns:
        The regenerated maps ``(B, H, N, M)`` to be multiplied with ``V``.
    """
    if attn.dim() != 4:
        raise ValueError(f'reattend expects attention maps of shape (B, H, N, M), '
                         f'got {tuple(attn.shape)}')
    heads = attn.shape[1]
    if weight.dim() == 4:
        weight = weight.flatten(1)
    if tuple(weight.shape) != (heads, heads):
        raise ValueError(f'reattend weight must be ({heads}, {heads}) for {heads} heads, '
                         f'got {tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (heads, ):
        raise ValueError(f'reattend bias must have shape ({heads},), got {tuple(bias.shape)}')
    # the official 1x1 nn.Conv2d(H, H) over the head channel, computed as one (H x H) @
    # (H x N*M) product per image: the same sums, ~5x faster than a 1x1 conv on CPU
    mixed = torch.matmul(weight.to(attn.dtype), attn.flatten(2)).view_as(attn)
    if bias is not None:
        mixed = mixed + bias.to(attn.dtype).view(1, heads, 1, 1)
    if norm is not None:
        mixed = norm(mixed)
    if scale != 1.0:
        mixed = mixed * scale
    return mixed


@MODELS.register_module()
class ReAttention(MultiheadAttention):
    """Multi-head self-attention with Re-attention (DeepViT).

    A drop-in replacement of mmpretrain's ``MultiheadAttention`` (same constructor arguments and
    parameter names ``qkv``/``proj``) with the official extra parameters ``reatten_matrix`` (1x1
    ``Conv2d(H, H)`` with bias) and ``var_norm`` (``BatchNorm2d(H)``).

    Args:
        embed_dims, num_heads, **kwargs: as for mmpretrain ``MultiheadAttention``.
        transform_scale: multiply the re-generated maps by ``head_dim ** -0.5`` (official
            DeepViT-S) instead of 1.
        norm_cfg: normalisation over heads; ``dict(type='BN')`` (official) or ``None``
            (identity, no parameters).
        transform_init: ``'default'`` - PyTorch's default conv init, as the official code;
            ``'identity'`` - ``Theta = I`` and zero bias (starts from plain attention up to the
            normalisation; useful when swapping into a pretrained ViT).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 transform_scale: bool = False,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 transform_init: str = 'default',
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        self._build_reattention(transform_scale, norm_cfg, transform_init)

    # ------------------------------------------------------------------ construction
    def _build_reattention(self, transform_scale: bool, norm_cfg: Optional[dict],
                           transform_init: str) -> None:
        if transform_init not in _TRANSFORM_INITS:
            raise ValueError(f'ReAttention transform_init must be one of {_TRANSFORM_INITS}, '
                             f'got {transform_init!r}')
        heads = self.num_heads
        ref = self.qkv.weight
        self.scale = self.head_dims**-0.5
        self.transform_init = transform_init
        self.reatten_scale = self.scale if transform_scale else 1.0
        self.reatten_matrix = nn.Conv2d(heads, heads, kernel_size=1, stride=1)
        if norm_cfg is None:
            self.var_norm = nn.Identity()
        else:
            self.var_norm = build_norm_layer(dict(norm_cfg), heads)[1]
        self.reatten_matrix.to(device=ref.device, dtype=ref.dtype)
        self.var_norm.to(device=ref.device, dtype=ref.dtype)
        self._reset_reattention()

    def _reset_reattention(self) -> None:
        if self.transform_init == 'identity':
            with torch.no_grad():
                self.reatten_matrix.weight.copy_(
                    torch.eye(self.num_heads).view(self.num_heads, self.num_heads, 1, 1))
                self.reatten_matrix.bias.zero_()
        else:
            self.reatten_matrix.reset_parameters()
        if hasattr(self.var_norm, 'reset_parameters'):
            self.var_norm.reset_parameters()

    def init_weights(self) -> None:
        """Keep the official init of the head transform whatever a parent ``init_cfg`` did.

        mmengine applies a parent's ``init_cfg`` (e.g. ``Kaiming`` on every ``Conv2d``) before the
        children's ``init_weights`` and a ``Pretrained`` init after them, so resetting here gives
        the official initialisation without overriding loaded checkpoints.
        """
        super().init_weights()
        self._reset_reattention()

    @classmethod
    def from_attention(cls,
                       attn: MultiheadAttention,
                       transform_scale: bool = False,
                       norm_cfg: Optional[dict] = dict(type='BN'),
                       transform_init: str = 'default') -> 'ReAttention':
        """Turn an mmpretrain ``MultiheadAttention`` into a ``ReAttention`` *in place*.

        The object keeps its identity, its ``qkv``/``proj`` weights, dropout settings, layer
        scale and any child already attached (e.g. ``dropkey``); only the head transform and
        its normalisation are added.
        """
        if isinstance(attn, ReAttention):
            raise ValueError('from_attention got a module that already uses Re-attention')
        if type(attn) is not MultiheadAttention:
            raise ValueError(f'Re-attention can replace mmpretrain MultiheadAttention only, '
                             f'got {type(attn).__name__}')
        attn.__class__ = cls
        attn._build_reattention(transform_scale, norm_cfg, transform_init)
        return attn

    # ------------------------------------------------------------------ forward
    def _qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _logits_to_probs(self, logits: Tensor) -> Tensor:
        """Softmax over keys (the hook point between logits and the head transform)."""
        return logits.softmax(dim=-1)

    def _reattend(self, probs: Tensor) -> Tensor:
        return reattend(probs, self.reatten_matrix.weight, self.reatten_matrix.bias,
                        self.var_norm, self.reatten_scale)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q, k, v = self._qkv(x)
        logits = (q @ k.transpose(-2, -1)) * self.scale
        probs = self._logits_to_probs(logits)
        probs = F.dropout(probs, self.attn_drop, self.training)
        attn = self._reattend(probs)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.embed_dims)
        x = self.proj(x)
        x = self.out_drop(self.gamma1(self.proj_drop(x)))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x

    @torch.no_grad()
    def attention_map(self, x: Tensor, stage: str = 'reattention') -> Tensor:
        """The ``(B, H, N, N)`` maps for input ``x`` without dropout/DropKey (diagnostics).

        ``stage='reattention'`` returns the regenerated maps (those multiplied with ``V``),
        ``stage='softmax'`` the softmax probabilities before the head transform.
        """
        if stage not in ('reattention', 'softmax'):
            raise ValueError(f"attention_map stage must be 'reattention' or 'softmax', "
                             f'got {stage!r}')
        q, k, _ = self._qkv(x)
        probs = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self._reattend(probs) if stage == 'reattention' else probs

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'reatten_scale={self.reatten_scale:.4g}, transform_init={self.transform_init!r}')


@register_attention_adapter(ReAttention)
class ReAttentionAdapter(AttentionAdapter):
    """``ReAttention.forward(x)`` with a pluggable ``softmax(q k^T * scale) v`` core.

    The core is called with ``v = I`` (identity over keys) so that it returns its attention
    probabilities - including whatever masking (DropKey) and dropout it applies - which are then
    re-generated by the head transform and multiplied with the real ``v``.
    """

    def forward(self, module: ReAttention, x: Tensor, *, attention_fn: Callable) -> Tensor:
        B, N, _ = x.shape
        q, k, v = module._qkv(x)
        eye = torch.eye(k.shape[-2], dtype=q.dtype, device=q.device).expand(B, module.num_heads,
                                                                            -1, -1)
        dropout_p = module.attn_drop if module.training else 0.
        probs = attention_fn(q, k, eye, dropout_p=dropout_p, scale=module.scale)
        attn = module._reattend(probs)
        out = (attn @ v).transpose(1, 2).reshape(B, N, module.embed_dims)
        out = module.proj(out)
        out = module.out_drop(module.gamma1(module.proj_drop(out)))
        if module.v_shortcut:
            out = v.squeeze(1) + out
        return out


# ---------------------------------------------------------------------- regularizer
def find_mha_modules(model: nn.Module) -> List[Tuple[str, MultiheadAttention]]:
    """``(name, module)`` of every mmpretrain ``MultiheadAttention``/``ReAttention``, in order."""
    return [(name, m) for name, m in model.named_modules()
            if type(m) is MultiheadAttention or isinstance(m, ReAttention)]


def _select_layers(num: int, last_k: Optional[int], layers: Optional[Sequence[int]]) -> List[int]:
    if last_k is not None and layers is not None:
        raise ValueError('reattention takes either `last_k` or `layers`, not both')
    if layers is not None:
        out = []
        for i in layers:
            if not -num <= int(i) < num:
                raise ValueError(f'reattention layer index {i} is out of range for '
                                 f'{num} attention layers')
            out.append(int(i) % num)
        return sorted(set(out))
    if last_k is None:
        return list(range(num))
    if not 0 <= int(last_k) <= num:
        raise ValueError(f'reattention last_k must be in [0, {num}], got {last_k}')
    return list(range(num - int(last_k), num))


_REATTENTION_KEYS = ('last_k', 'layers', 'transform_scale', 'norm_cfg', 'transform_init')


@register_regularizer('reattention', order=10)
def apply_reattention(model: nn.Module, cfg: Dict) -> None:
    """Swap the attention of the chosen blocks of ``model`` for Re-attention, in place.

    ``cfg`` keys: ``last_k`` (the last K attention layers; default all) or ``layers`` (explicit
    indices among the model's attention layers), ``transform_scale``, ``norm_cfg`` and
    ``transform_init`` (see :class:`ReAttention`). Works on any model whose blocks use mmpretrain
    ``MultiheadAttention`` (``VisionTransformer``, DeiT, ...); ``qkv``/``proj`` weights are kept.
    """
    unknown = sorted(set(cfg) - set(_REATTENTION_KEYS))
    if unknown:
        raise KeyError(f'unknown reattention option(s) {unknown}; '
                       f'allowed: {list(_REATTENTION_KEYS)}')
    found = find_mha_modules(model)
    if not found:
        raise ValueError(f'reattention found no mmpretrain MultiheadAttention in '
                         f'{type(model).__name__} to replace')
    chosen = _select_layers(len(found), cfg.get('last_k'), cfg.get('layers'))
    for i in chosen:
        name, module = found[i]
        if isinstance(module, ReAttention):
            continue
        ReAttention.from_attention(
            module,
            transform_scale=bool(cfg.get('transform_scale', False)),
            norm_cfg=cfg.get('norm_cfg', dict(type='BN')),
            transform_init=cfg.get('transform_init', 'default'))


def reattention_layer_indices(model: nn.Module) -> List[int]:
    """Indices (among the model's attention layers) that use Re-attention."""
    return [i for i, (_, m) in enumerate(find_mha_modules(model)) if isinstance(m, ReAttention)]

