"""``ReAttention``: mmpretrain ``MultiheadAttention`` with DeepViT's Re-attention built in.

A registered type for configs that build attention layers by name (e.g. ``attn_cfg`` of custom
blocks). It is the plain mmpretrain attention (same arguments, same ``qkv``/``proj`` weights)
with the ``reattention`` head-mixing child attached by the same code as the ``reattention`` key
of ``Regularized`` (:mod:`mmvitreg.regularizers.stages.reattention`, which also documents the
paper's equation and the official details).
"""
from typing import Optional

from mmpretrain.models.utils.attention import MultiheadAttention

from mmvitreg.registry import MODELS
from mmvitreg.regularizers.stages.reattention import attach_reattention

__all__ = ['ReAttention']


@MODELS.register_module()
class ReAttention(MultiheadAttention):
    """Multi-head self-attention with Re-attention (DeepViT).

    Args:
        embed_dims, num_heads, **kwargs: as for mmpretrain ``MultiheadAttention``.
        transform_scale: multiply the re-generated maps by ``head_dim ** -0.5`` (official
            DeepViT-S) instead of 1.
        norm_cfg: normalisation over heads; ``dict(type='BN')`` (official) or None.
        transform_init: ``'default'`` (PyTorch's conv init, official) or ``'identity'``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 transform_scale: bool = False,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 transform_init: str = 'default',
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        attach_reattention(self, dict(transform_scale=transform_scale, norm_cfg=norm_cfg,
                                      transform_init=transform_init))
