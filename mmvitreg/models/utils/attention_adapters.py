"""Attention adapters: run a host attention module with a pluggable attention *core*.

An adapter re-implements the ``forward`` of one host attention class from the module's own
parameters, up to the point where ``softmax(q k^T * scale + mask) v`` is computed, calls
``attention_fn`` for that step and finishes the layer exactly as the host does (output
projection, dropouts, layer scale, residual). Mechanisms that change only the softmax step
(DropKey) or only need to look at it (attention-map diagnostics) therefore need no per-host code.

The core has the signature of ``F.scaled_dot_product_attention`` plus grid hints::

    attention_fn(q, k, v, attn_mask=None, dropout_p=0.0, scale=None, grid_hw=None,
                 num_extra_tokens=None) -> out          # q: (B, heads, Nq, d)

with ``attn_mask`` in SDPA convention (bool True = may attend, or an additive float bias).

Supported hosts: mmpretrain ``MultiheadAttention`` (ViT, DeiT, ...), mmcv ``MultiheadAttention``
(mmdet DETR encoder/decoder layers), timm ``Attention`` (timm ViTs, also inside mmpretrain
``TIMMBackbone``) and mmvitreg's own attention modules (which register themselves with
:func:`register_attention_adapter`). Deformable attention has no softmax over keys and is refused
by :func:`check_not_deformable`.

Attention maps for diagnostics::

    out, maps = attention_probs(module, x)   # maps: list of (B, heads, Nq, Nk) tensors

(one entry per core call, e.g. one per window batch in windowed attention).
"""
import fnmatch
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'AttentionAdapter', 'register_attention_adapter', 'get_attention_adapter',
    'find_attention_modules', 'match_target', 'check_not_deformable', 'is_deformable_attention',
    'sdpa_core', 'attention_probs', 'ATTENTION_ADAPTERS'
]


def sdpa_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
              scale: Optional[float] = None, grid_hw=None, num_extra_tokens=None) -> torch.Tensor:
    """The plain core: ``F.scaled_dot_product_attention`` (grid hints ignored)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                          scale=scale)


class AttentionAdapter:
    """Base class: ``forward(module, *args, attention_fn, **kwargs)`` mirrors the host forward."""

    def forward(self, module: nn.Module, *args, attention_fn: Callable, **kwargs):
        raise NotImplementedError


ATTENTION_ADAPTERS: Dict[type, AttentionAdapter] = {}


def register_attention_adapter(*classes: type) -> Callable:
    """Class decorator registering an adapter (instantiated once) for the given host classes."""

    def _register(adapter_cls: Type[AttentionAdapter]) -> Type[AttentionAdapter]:
        inst = adapter_cls()
        for c in classes:
            ATTENTION_ADAPTERS[c] = inst
        return adapter_cls

    return _register


def get_attention_adapter(module: nn.Module) -> Optional[AttentionAdapter]:
    """The adapter of ``module``'s class, or of a registered base class when no class in between
    overrides ``forward`` (classes marked ``_keeps_attention_semantics`` may, e.g. the DropKey
    mixin). None when the module is not a supported attention."""
    for cls in type(module).__mro__:
        if cls in ATTENTION_ADAPTERS:
            return ATTENTION_ADAPTERS[cls]
        if 'forward' in cls.__dict__ and not cls.__dict__.get('_keeps_attention_semantics', False):
            return None
    return None


def is_deformable_attention(module: nn.Module) -> bool:
    """True for deformable attention (mmcv ``MultiScaleDeformableAttention`` and subclasses)."""
    return any('DeformableAttention' in c.__name__ for c in type(module).__mro__)


def check_not_deformable(module: nn.Module, name: str = '', mechanism: str = 'DropKey') -> None:
    if is_deformable_attention(module):
        raise ValueError(
            f'{mechanism} needs a softmax over keys, but {type(module).__name__} at '
            f'{name or "<root>"!r} is deformable attention (sampled points, no key softmax); '
            f'restrict `targets` to softmax attention layers')


def match_target(name: str, target: str) -> bool:
    """Whether module path ``name`` belongs to ``target``.

    ``''`` matches everything; a target with ``*``/``?`` is an ``fnmatch`` pattern on the full
    path; otherwise its dot-separated parts must appear in order among the path's parts, the
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


def find_attention_modules(model: nn.Module, target: str = '') -> List[Tuple[str, nn.Module]]:
    """Supported attention modules under ``target`` in definition (= depth) order.

    Modules nested inside an already matched attention are skipped. Raises ``ValueError`` when
    the target covers a deformable attention (see :func:`check_not_deformable`).
    """
    found: List[Tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if not match_target(name, target):
            continue
        if any(name.startswith(n + '.') for n, _ in found):
            continue
        check_not_deformable(mod, name)
        if get_attention_adapter(mod) is not None:
            found.append((name, mod))
    return found


# ------------------------------------------------------------------------------------------------
# attention maps
# ------------------------------------------------------------------------------------------------
class _ProbsRecorder:
    """A core computing softmax explicitly and recording the probabilities."""

    def __init__(self):
        self.maps: List[torch.Tensor] = []

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, scale=None, grid_hw=None,
                 num_extra_tokens=None):
        scale = q.shape[-1]**-0.5 if scale is None else scale
        logits = (q * scale) @ k.transpose(-2, -1)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attn_mask, float('-inf'))
            else:
                logits = logits + attn_mask
        probs = logits.softmax(dim=-1)
        self.maps.append(probs.detach())
        if dropout_p > 0:
            probs = F.dropout(probs, dropout_p)
        return probs @ v


def attention_probs(module: nn.Module, *args, **kwargs) -> Tuple[object, List[torch.Tensor]]:
    """Run ``module`` (a supported attention) and return ``(output, maps)``.

    ``maps`` holds the attention probabilities ``(B, heads, Nq, Nk)`` of every core call (after
    the host's masks, before attention dropout). DropKey, if attached, is bypassed.
    """
    adapter = get_attention_adapter(module)
    if adapter is None:
        raise ValueError(f'{type(module).__name__} is not a supported attention module; '
                         f'supported: {sorted(c.__name__ for c in ATTENTION_ADAPTERS)}')
    rec = _ProbsRecorder()
    out = adapter.forward(module, *args, attention_fn=rec, **kwargs)
    return out, rec.maps


# ------------------------------------------------------------------------------------------------
# mmpretrain MultiheadAttention (VisionTransformer, DeiT, ...)
# ------------------------------------------------------------------------------------------------
from mmpretrain.models.utils.attention import MultiheadAttention as _PretrainMHA  # noqa: E402


@register_attention_adapter(_PretrainMHA)
class PretrainMHAAdapter(AttentionAdapter):
    """mmpretrain ``MultiheadAttention.forward(x)``.

    Note: mmpretrain uses ``head_dims ** -0.5`` even when ``qk_scale`` is given (its pyimpl
    partial ignores the value); the adapter reproduces the host, not the docstring.
    """

    def forward(self, module, x, *, attention_fn):
        B, N, _ = x.shape
        qkv = module.qkv(x).reshape(B, N, 3, module.num_heads,
                                    module.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn_drop = module.attn_drop if module.training else 0.
        out = attention_fn(q, k, v, dropout_p=attn_drop)
        out = out.transpose(1, 2).reshape(B, N, module.embed_dims)
        out = module.proj(out)
        out = module.out_drop(module.gamma1(module.proj_drop(out)))
        if module.v_shortcut:
            out = v.squeeze(1) + out
        return out


# ------------------------------------------------------------------------------------------------
# mmcv MultiheadAttention (wraps nn.MultiheadAttention; mmdet DETR layers)
# ------------------------------------------------------------------------------------------------
from mmcv.cnn.bricks.transformer import MultiheadAttention as _MMCVMHA  # noqa: E402


def _mha_mask(attn_mask: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
              batch: int, heads: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """nn.MultiheadAttention masks (True/nonzero = blocked, or additive float) -> SDPA mask."""
    allowed = None
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype in (torch.bool, torch.uint8):
            allowed = ~attn_mask.bool()
        else:
            bias = attn_mask.to(dtype)
        if attn_mask.dim() == 3:  # (B*heads, Nq, Nk)
            if allowed is not None:
                allowed = allowed.view(batch, heads, *allowed.shape[-2:])
            else:
                bias = bias.view(batch, heads, *bias.shape[-2:])
    if key_padding_mask is not None:
        if key_padding_mask.dtype in (torch.bool, torch.uint8):
            kp = ~key_padding_mask.bool()[:, None, None, :]
            if bias is not None:
                bias = bias.masked_fill(~kp, float('-inf'))
            else:
                allowed = kp if allowed is None else allowed & kp
        else:
            kp_bias = key_padding_mask.to(dtype)[:, None, None, :]
            if allowed is not None:
                bias = torch.zeros_like(kp_bias).masked_fill(~allowed, float('-inf'))
                allowed = None
            bias = kp_bias if bias is None else bias + kp_bias
    return bias if bias is not None else allowed


@register_attention_adapter(_MMCVMHA)
class MMCVMHAAdapter(AttentionAdapter):
    """mmcv ``MultiheadAttention.forward(query, key, value, identity, query_pos, key_pos,
    attn_mask, key_padding_mask)`` around ``nn.MultiheadAttention`` (q is scaled by
    ``head_dim ** -0.5`` as in PyTorch)."""

    def forward(self, module, query, key=None, value=None, identity=None, query_pos=None,
                key_pos=None, attn_mask=None, key_padding_mask=None, *, attention_fn, **kwargs):
        mha: nn.MultiheadAttention = module.attn
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError('attention adapters do not support nn.MultiheadAttention with '
                             'add_bias_kv=True or add_zero_attn=True')
        if key is None:
            key = query
        if value is None:
            value = key
        if identity is None:
            identity = query
        if key_pos is None and query_pos is not None and query_pos.shape == key.shape:
            key_pos = query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        if not module.batch_first:  # (N, B, C) -> (B, N, C)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        B, Nq, E = query.shape
        Nk = key.shape[1]
        H = mha.num_heads
        d = E // H
        if mha._qkv_same_embed_dim:
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        b_q = b_k = b_v = None
        if mha.in_proj_bias is not None:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(B, Nq, H, d).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(B, Nk, H, d).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(B, Nk, H, -1).transpose(1, 2)
        mask = _mha_mask(attn_mask, key_padding_mask, B, H, q.dtype)
        dropout_p = mha.dropout if module.training else 0.0
        out = attention_fn(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(B, Nq, E)
        out = mha.out_proj(out)
        if not module.batch_first:
            out = out.transpose(0, 1)
        return identity + module.dropout_layer(module.proj_drop(out))


# ------------------------------------------------------------------------------------------------
# timm Attention (timm ViT / DeiT, TIMMBackbone)
# ------------------------------------------------------------------------------------------------
try:
    from timm.layers import Attention as _TimmAttention
except ImportError:  # pragma: no cover - timm is part of the pinned stack
    _TimmAttention = None

if _TimmAttention is not None:

    @register_attention_adapter(_TimmAttention)
    class TimmAttentionAdapter(AttentionAdapter):
        """timm ``Attention.forward(x, attn_mask=None, is_causal=False)`` (qk-norm, scale-norm
        and the optional sigmoid gate included)."""

        def forward(self, module, x, attn_mask=None, is_causal=False, *, attention_fn):
            B, N, _ = x.shape
            gate = getattr(module, 'gate', None)
            gate = gate(x).sigmoid() if gate is not None else None
            qkv = module.qkv(x).reshape(B, N, 3, module.num_heads,
                                        module.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q, k = module.q_norm(q), module.k_norm(k)
            if is_causal:
                attn_mask = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
            elif attn_mask is not None and attn_mask.dtype != torch.bool:
                attn_mask = attn_mask.to(q.dtype)
            dropout_p = module.attn_drop.p if module.training else 0.0
            out = attention_fn(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                               scale=module.scale)
            attn_dim = getattr(module, 'attn_dim', module.num_heads * module.head_dim)
            out = out.transpose(1, 2).reshape(B, N, attn_dim)
            out = module.norm(out)
            if gate is not None:
                out = out * gate
            out = module.proj(out)
            return module.proj_drop(out)
