"""DHVT building blocks: SOPE, DAFF and HI-MHSA (Lu et al., NeurIPS 2022).

"Bridging the Gap Between Vision Transformers and Convolutional Neural Networks on Small Datasets",
official code ``ArieSeirack/DHVT`` (``vision_transformer.py``). The layers here reproduce the
official code's parameter layout exactly (so parameter counts and converted checkpoints match) under
mmvitreg's own names, which :mod:`tools.model_converters.dhvt_to_mmvitreg` maps.

Functional core (pure tensor functions, no module state):

* :func:`sope_channels` - channel schedule of the SOPE convolution stack.
* :func:`tokens_to_map` / :func:`map_to_tokens` - ``(B, N, C) <-> (B, C, H, W)`` for any ``H != W``.
* :func:`head_tokens` - the HI-MHSA head tokens (one per head) computed from the input tokens.
* :func:`insert_head_tokens` / :func:`merge_head_tokens` - place the head tokens in the
  sequence and fold the attended ones back into the class token.
* :func:`cls_token_reweight` - DAFF's SE-like re-weighting of the class token.

Thin registered modules: :class:`SOPE`, :class:`DAFF`, :class:`HIMHSA`, :class:`DHVTBlock`.

Where the official code and the paper differ, the official code is followed (noted per function).
The one generalisation: the official code hard-codes square token grids (``sqrt(N - 1)``); here the
grid ``(H, W)`` is passed explicitly, so non-square inputs (detection) work unchanged.

HI-MHSA computes its attention step in the :meth:`HIMHSA.attention` method with the key grid
given (it is an ``AttentionSlot``), so the ``dropkey``/``reattention`` regularizers and the
attention-map diagnostics work on DHVT without DHVT-specific code.
"""
import math
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_

from mmvitreg.ops.token_grid import TokenGrid
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.attention import AttentionSlot

__all__ = [
    'sope_channels', 'tokens_to_map', 'map_to_tokens', 'head_tokens', 'insert_head_tokens',
    'merge_head_tokens', 'cls_token_reweight', 'Affine', 'SOPE', 'DAFF', 'HIMHSA',
    'DHVTBlock'
]


# --------------------------------------------------------------------------------------------
# functional core
# --------------------------------------------------------------------------------------------
def sope_channels(embed_dims: int, patch_size: int) -> List[int]:
    """Output channels of the ``log2(patch_size)`` stride-2 3x3 convolutions of SOPE.

    Paper: a sequence of 3x3 stride-2 convs whose width doubles up to ``embed_dims``. The official
    code hard-codes patch sizes 2 (``[D]``), 4 (``[D/2, D]``) and 16 (``[D/8, D/4, D/2, D]``);
    this function gives the same lists and extends the rule to any power of two (8 -> ``[D/4,
    D/2, D]``).
    """
    if not isinstance(patch_size, int) or patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f'SOPE patch_size must be a power of two >= 2, got {patch_size!r}')
    num_convs = int(math.log2(patch_size))
    channels = [embed_dims // 2**(num_convs - 1 - i) for i in range(num_convs)]
    if channels[0] < 1:
        raise ValueError(f'SOPE embed_dims={embed_dims} is too small for patch_size={patch_size}')
    return channels


def tokens_to_map(tokens: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
    """Reshape patch tokens ``(B, H*W, C)`` (row-major) to a feature map ``(B, C, H, W)``."""
    B, N, C = tokens.shape
    H, W = hw_shape
    if N != H * W:
        raise ValueError(f'tokens_to_map got {N} tokens for a grid of hw_shape={tuple(hw_shape)}')
    return tokens.transpose(1, 2).reshape(B, C, H, W)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Flatten a feature map ``(B, C, H, W)`` to tokens ``(B, H*W, C)`` (row-major)."""
    return x.flatten(2).transpose(1, 2)


def head_tokens(x: torch.Tensor,
                num_heads: int,
                proj_weight: torch.Tensor,
                proj_bias: Optional[torch.Tensor],
                norm_weight: torch.Tensor,
                norm_bias: torch.Tensor,
                pos_embed: torch.Tensor,
                norm_eps: float = 1e-5,
                act: Callable[[torch.Tensor], torch.Tensor] = F.gelu) -> torch.Tensor:
    """HI-MHSA head tokens: one full-width token per attention head.

    Paper (Sec. 3.3): the input ``(B, N, C)`` is split into ``h`` channel groups (one per head),
    each group is averaged over the tokens, projected to the full width ``C`` by a shared linear
    layer, normalised, activated and given a learnable head position embedding.

    Official-code details followed here: the average includes the class token; the LayerNorm has
    ``C / h`` channels and is applied to each of the ``h`` chunks of the projected ``C``-d vector
    (not to the whole vector); the activation is GELU; ``pos_embed`` has shape ``(1, h, C)``.

    Args:
        x: tokens ``(B, N, C)`` (class token first, then patch tokens).
        num_heads: number of heads ``h``; ``C`` must be divisible by it.
        proj_weight, proj_bias: the ``C/h -> C`` projection (``nn.Linear`` layout).
        norm_weight, norm_bias: the ``C/h``-channel LayerNorm parameters.
        pos_embed: head position embedding ``(1, h, C)``.

    Returns:
        Head tokens ``(B, h, C)``.
    """
    B, N, C = x.shape
    if C % num_heads:
        raise ValueError(f'HI-MHSA embed_dims={C} must be divisible by num_heads={num_heads}')
    head_dim = C // num_heads
    pooled = x.reshape(B, N, num_heads, head_dim).mean(dim=1)  # (B, h, C/h)
    projected = F.linear(pooled, proj_weight, proj_bias)  # (B, h, C)
    projected = projected.reshape(B, num_heads, num_heads, head_dim)
    projected = F.layer_norm(projected, (head_dim, ), norm_weight, norm_bias, norm_eps)
    return act(projected).reshape(B, num_heads, C) + pos_embed


def insert_head_tokens(x: torch.Tensor, head_toks: torch.Tensor) -> torch.Tensor:
    """``[cls; patches]`` + head tokens -> ``[cls; head tokens; patches]`` ``(B, 1 + h + N_p, C)``.

    The official code appends the head tokens at the *end* of the sequence. Attention, the
    shared ``qkv``/``proj`` linears and the merge are all per-token or permutation-equivariant,
    so the position in the sequence does not change any result; placing them right after the
    class token keeps every non-grid token in front of the ``H x W`` patch grid, which is the
    key layout structured attention cores (DropKey block/cross) expect
    (``num_extra_tokens = 1 + h``).
    """
    return torch.cat([x[:, :1], head_toks, x[:, 1:]], dim=1)


def merge_head_tokens(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Drop the ``num_heads`` head tokens after adding their mean to the class token.

    Paper and official code agree: the attended (and output-projected) head tokens are averaged
    and added to the class token, then discarded. ``x`` is ``[cls; head tokens; patches]``
    ``(B, 1 + h + N_p, C)`` (see :func:`insert_head_tokens`); returns ``(B, 1 + N_p, C)``.
    """
    cls_token = x[:, :1] + x[:, 1:1 + num_heads].mean(dim=1, keepdim=True)
    return torch.cat([cls_token, x[:, 1 + num_heads:]], dim=1)


def cls_token_reweight(cls_token: torch.Tensor,
                       patch_map: torch.Tensor,
                       reduce_weight: torch.Tensor,
                       reduce_bias: Optional[torch.Tensor],
                       expand_weight: torch.Tensor,
                       expand_bias: Optional[torch.Tensor],
                       act: Callable[[torch.Tensor], torch.Tensor] = F.gelu) -> torch.Tensor:
    """DAFF's class-token re-weighting: ``cls * expand(act(reduce(avgpool(patch_map))))``.

    Paper (Sec. 3.2): "we re-weight the class token with the squeezed patch tokens, as in SE".
    Official code (followed): the channel weight is the raw output of the second linear layer,
    with **no sigmoid** (unlike SENet), GELU in between, reduction 4, and the pooled input is the
    output of DAFF's last pointwise conv + BatchNorm.

    Args:
        cls_token: ``(B, 1, C)``.
        patch_map: ``(B, C, H, W)``.

    Returns:
        The re-weighted class token ``(B, 1, C)``.
    """
    squeezed = patch_map.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C)
    weight = F.linear(act(F.linear(squeezed, reduce_weight, reduce_bias)), expand_weight,
                      expand_bias)
    return cls_token * weight


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------
class Affine(nn.Module):
    """Per-channel affine ``x * alpha + beta`` on ``(B, C, H, W)`` maps (SOPE's Aff operator)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha + self.beta


@MODELS.register_module()
class SOPE(nn.Module):
    """Sequential Overlapping Patch Embedding.

    ``pre_affine -> [3x3 stride-2 conv (no bias) -> BN -> GELU] x log2(patch_size) -> post_affine``,
    no absolute position embedding. As in the official code there is no GELU after the last conv,
    except for ``patch_size=2`` (a single conv) where the official code keeps it; ``final_act``
    overrides that. The official code uses ``SyncBatchNorm``; pass ``norm_cfg=dict(type='SyncBN')``
    for multi-GPU runs (``BN`` by default so that it also runs on one process / CPU).

    Returns ``(tokens (B, H*W, C), (H, W))``; each conv maps a side ``s`` to ``ceil(s / 2)``, so
    any input size works (``H = ceil(H_in / patch_size)``). ``input_size`` is only the nominal
    size (``init_input_size``, read e.g. by DRLoc's build-time probe); default 32 for
    ``patch_size <= 4`` (the CIFAR models), else 224.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 192,
                 patch_size: int = 16,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 final_act: Optional[bool] = None,
                 input_size: Optional[Union[int, Tuple[int, int]]] = None):
        super().__init__()
        channels = sope_channels(embed_dims, patch_size)
        if input_size is None:
            input_size = 32 if patch_size <= 4 else 224
        self.init_input_size = ((input_size, input_size) if isinstance(input_size, int) else
                                tuple(input_size))
        if final_act is None:
            final_act = len(channels) == 1  # official code: GELU after the conv only for p=2
        self.patch_size = patch_size
        self.embed_dims = embed_dims
        self.pre_affine = Affine(in_channels)
        layers = []
        for i, out_ch in enumerate(channels):
            last = i == len(channels) - 1
            conv = ConvModule(
                in_channels if i == 0 else channels[i - 1], out_ch, 3, stride=2, padding=1,
                bias=False, norm_cfg=norm_cfg,
                act_cfg=act_cfg if (not last or final_act) else None)
            conv.conv.reset_parameters()  # PyTorch default init, as the official code
            layers.append(conv)
        self.projection = nn.Sequential(*layers)
        self.post_affine = Affine(embed_dims)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.post_affine(self.projection(self.pre_affine(x)))
        return map_to_tokens(x), (x.shape[2], x.shape[3])


@MODELS.register_module()
class DAFF(nn.Module):
    """Dynamic Aggregation Feed-Forward.

    The class token is split off; the patch tokens, as a ``(B, C, H, W)`` map, go through
    ``1x1 conv -> BN -> GELU``, ``3x3 depthwise conv -> BN -> GELU`` with a residual around it,
    and ``1x1 conv -> BN``; the class token is re-weighted by :func:`cls_token_reweight` from the
    pooled output. Convs carry biases and the SE layers are ``nn.Linear`` with reduction 4, as in
    the official code (this fixes the parameter count). The official ``drop`` argument is unused
    there, so this module has no dropout.

    ``forward(x, hw_shape)`` takes ``x`` = ``(B, 1 + H*W, C)`` with the class token first.
    """

    def __init__(self,
                 embed_dims: int,
                 feedforward_channels: int,
                 kernel_size: int = 3,
                 se_ratio: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = feedforward_channels
        self.pw_conv1 = nn.Conv2d(embed_dims, hidden, 1)
        self.norm1 = build_norm_layer(norm_cfg, hidden)[1]
        self.dw_conv = nn.Conv2d(hidden, hidden, kernel_size, padding=(kernel_size - 1) // 2,
                                 groups=hidden)
        self.norm2 = build_norm_layer(norm_cfg, hidden)[1]
        self.pw_conv2 = nn.Conv2d(hidden, embed_dims, 1)
        self.norm3 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.act = build_activation_layer(act_cfg)
        self.se_reduce = nn.Linear(embed_dims, embed_dims // se_ratio)
        self.se_expand = nn.Linear(embed_dims // se_ratio, embed_dims)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        cls_token, patches = x[:, :1], x[:, 1:]
        y = self.act(self.norm1(self.pw_conv1(tokens_to_map(patches, hw_shape))))
        y = y + self.act(self.norm2(self.dw_conv(y)))
        y = self.norm3(self.pw_conv2(y))
        cls_token = cls_token_reweight(cls_token, y, self.se_reduce.weight, self.se_reduce.bias,
                                       self.se_expand.weight, self.se_expand.bias, self.act)
        return torch.cat([cls_token, map_to_tokens(y)], dim=1)


@MODELS.register_module()
class HIMHSA(AttentionSlot, nn.Module):
    """Head-Interacting Multi-Head Self-Attention.

    :func:`head_tokens` adds one token per head to the sequence, standard multi-head attention
    runs over ``1 + h + N_patch`` tokens (shared ``qkv``/``proj``), and :func:`merge_head_tokens`
    folds the head tokens into the class token. Parameter names: ``qkv``, ``proj``,
    ``head_token_proj`` (``C/h -> C``), ``head_token_norm`` (LayerNorm over ``C/h``),
    ``head_pos_embed`` ``(1, h, C)``.

    The attention step is :meth:`attention` (plain SDPA; keys ``[cls; head tokens; H x W]``,
    i.e. ``num_extra_tokens = 1 + h``). DropKey (``Regularized(..., dropkey=...)``) reaches it
    through the attention site of ``AttentionSlot`` modules: it masks keys of the pre-softmax
    logits, head tokens included.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 head_norm_eps: float = 1e-5,
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(
                f'HIMHSA embed_dims={embed_dims} must be divisible by num_heads={num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = self.head_dims**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.head_token_proj = nn.Linear(self.head_dims, embed_dims)
        self.head_token_norm = nn.LayerNorm(self.head_dims, eps=head_norm_eps)
        self.head_act = build_activation_layer(act_cfg)
        self.head_pos_embed = nn.Parameter(torch.zeros(1, num_heads, embed_dims))
        trunc_normal_(self.head_pos_embed, std=.02)

    def extend(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[cls; patches]`` -> ``[cls; head tokens; patches]`` ``(B, 1 + h + N_p, C)``."""
        ht = head_tokens(x, self.num_heads, self.head_token_proj.weight,
                         self.head_token_proj.bias, self.head_token_norm.weight,
                         self.head_token_norm.bias, self.head_pos_embed,
                         self.head_token_norm.eps, self.head_act)
        return insert_head_tokens(x, ht)

    def forward(self, x: torch.Tensor, hw_shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """HI-MHSA of ``x`` ``(B, 1 + H*W, C)``; keys are ``[cls; head tokens; H x W grid]``."""
        x_ext = self.extend(x)
        B, N, C = x_ext.shape
        qkv = self.qkv(x_ext).reshape(B, N, 3, self.num_heads, self.head_dims)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        grid = TokenGrid(tuple(hw_shape), 1 + self.num_heads) if hw_shape is not None else None
        out = self.attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.,
                             scale=self.scale, grid=grid)
        out = self.proj(out.transpose(1, 2).reshape(B, N, C))
        return self.proj_drop(merge_head_tokens(out, self.num_heads))


@MODELS.register_module()
class DHVTBlock(nn.Module):
    """DHVT encoder layer: ``x + DropPath(HIMHSA(LN(x)))`` then ``x + DropPath(DAFF(LN(x)))``.

    Sub-module names follow mmpretrain's ``TransformerEncoderLayer``: ``ln1``, ``attn``, ``ln2``,
    ``ffn``. LayerNorm eps is 1e-6 as in the official code.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 ffn_norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = HIMHSA(embed_dims, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                           proj_drop=drop_rate, act_cfg=act_cfg)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = DAFF(embed_dims, feedforward_channels, norm_cfg=ffn_norm_cfg, act_cfg=act_cfg)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.ln1(x), hw_shape))
        return x + self.drop_path(self.ffn(self.ln2(x), hw_shape))
