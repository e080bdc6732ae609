"""Attention site of mmcv ``MultiheadAttention`` (mmdet DETR encoder/decoder layers, QPIC).

mmcv wraps ``nn.MultiheadAttention`` and computes the attention step inside it, so the site
reproduces ``mmcv MultiheadAttention.forward`` (positional encodings, batch-first handling, the
in-projection of ``nn.MultiheadAttention``, its masks) up to the step; while no mechanism is
active it calls the host's own ``forward``. The keys are a flattened feature map or object
queries whose layout the layer does not know, so the key grid is known only from the config's
``grid`` option (DropKey-Block/Cross refuse these layers otherwise).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from torch import Tensor

from ..attention import AttentionSite, register_attention_site

__all__ = ['MMCVAttentionSite', 'sdpa_mask_from_mha']


def sdpa_mask_from_mha(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                       batch: int, heads: int, dtype: torch.dtype) -> Optional[Tensor]:
    """``nn.MultiheadAttention`` masks (True/nonzero = blocked, or additive float) -> one mask
    in ``F.scaled_dot_product_attention`` convention (bool True = may attend, or float bias)."""
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


@register_attention_site(MultiheadAttention)
class MMCVAttentionSite(AttentionSite):
    method = 'forward'

    @property
    def grid_missing(self) -> str:
        return 'object queries or a flattened feature map whose size the layer does not know'

    def num_heads(self) -> int:
        return int(self.host.attn.num_heads)

    def head_dim(self) -> int:
        return int(self.host.attn.head_dim)

    def __call__(self, query, key=None, value=None, identity=None, query_pos=None, key_pos=None,
                 attn_mask=None, key_padding_mask=None, **kwargs):
        module = self.host
        if not self.active:
            return self.original(query, key, value, identity, query_pos, key_pos, attn_mask,
                                 key_padding_mask, **kwargs)
        mha: nn.MultiheadAttention = module.attn
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError('mmvitreg attention mechanisms do not support nn.MultiheadAttention '
                             'with add_bias_kv=True or add_zero_attn=True')
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
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
        mask = sdpa_mask_from_mha(attn_mask, key_padding_mask, B, H, q.dtype)
        out = self.attend(q, k, v, attn_mask=mask,
                          dropout_p=mha.dropout if module.training else 0.0,
                          grid=self.key_grid(Nk))
        out = mha.out_proj(out.transpose(1, 2).reshape(B, Nq, E))
        if not module.batch_first:
            out = out.transpose(0, 1)
        return identity + module.dropout_layer(module.proj_drop(out))
