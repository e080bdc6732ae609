"""Attention site of timm ``Attention`` (timm ViT/DeiT, also inside mmpretrain ``TIMMBackbone``).

Needs torch and timm only. ``timm.models.vision_transformer.Attention`` is the ViT attention
class in every timm version the package accepts (timm >= 1.0 defines it in ``timm.layers`` and
re-exports it there). timm computes the attention step inside ``forward``, so the site reproduces
that forward (qk-norm, scale-norm and the optional output gate included) up to the step; while
no mechanism is active it calls the host's own ``forward``. The keys are the model's prefix
tokens (class + register tokens: ``num_prefix_tokens``) followed by a square patch grid.
"""
from typing import Optional

import torch
from timm.models.vision_transformer import Attention
from torch import Tensor

from ..attention import AttentionSite, register_attention_site

__all__ = ['TimmAttentionSite']


@register_attention_site(Attention)
class TimmAttentionSite(AttentionSite):
    method = 'forward'

    def __call__(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                 is_causal: bool = False) -> Tensor:
        module = self.host
        if not self.active:  # timm < 1.0 takes x only: pass the masks only when given
            if attn_mask is None and not is_causal:
                return self.original(x)
            return self.original(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        gate = getattr(module, 'gate', None)
        gate = gate(x).sigmoid() if gate is not None else None
        qkv = module.qkv(x).reshape(B, N, 3, module.num_heads, module.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = module.q_norm(q), module.k_norm(k)
        if is_causal:
            attn_mask = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
        elif attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        out = self.attend(q, k, v, attn_mask=attn_mask,
                          dropout_p=module.attn_drop.p if module.training else 0.0,
                          scale=module.scale, grid=self.key_grid(N))
        attn_dim = getattr(module, 'attn_dim', q.shape[1] * q.shape[-1])
        out = out.transpose(1, 2).reshape(B, N, attn_dim)
        out = module.norm(out) if hasattr(module, 'norm') else out
        if gate is not None:
            out = out * gate
        return module.proj_drop(module.proj(out))
