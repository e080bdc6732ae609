"""Attention site of mmpretrain ``MultiheadAttention`` (ViT, DeiT, ... and DeepViT).

mmpretrain routes its attention step through the instance attribute
``scaled_dot_product_attention(q, k, v, dropout_p=...)``; the site replaces that attribute, so no
part of the host's forward is copied. The keys are the backbone's extra tokens (class,
distillation) followed by a square patch grid; the number of extra tokens comes from the backbone
at installation (``VisionTransformer.num_extra_tokens``), or the grid from the config. With
``qk_scale`` set, mmpretrain's slot is its python attention with ``scale=head_dims ** -0.5``,
which *divides* the logits by that value; the site reproduces the host (logits times
``head_dims ** 0.5``), not mmpretrain's docstring.
"""
import functools
from typing import Optional

from mmpretrain.models.utils.attention import MultiheadAttention
from torch import Tensor

from ..attention import AttentionSite, register_attention_site

__all__ = ['PretrainAttentionSite']


@register_attention_site(MultiheadAttention)
class PretrainAttentionSite(AttentionSite):
    method = 'scaled_dot_product_attention'

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None,
                 dropout_p: float = 0.0) -> Tensor:
        if not self.active:
            return self.original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.attend(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                           scale=self.logit_scale(), grid=self.key_grid(k.shape[-2]))

    def logit_scale(self) -> Optional[float]:
        """The factor the host applies to ``q k^T`` (None: SDPA's default ``d ** -0.5``)."""
        saved = self._saved
        if isinstance(saved, functools.partial) and saved.keywords.get('scale'):
            return 1.0 / saved.keywords['scale']
        return None
