"""Plain ViT detection backbone (ViTDet design: Li et al., "Exploring Plain Vision Transformer
Backbones for Object Detection", ECCV 2022) and its simple feature pyramid.

The mmdet wheel has no ViTDet (it lives in mmdet's ``projects/``), so mmvitreg provides:

* ``PlainViT``: a non-hierarchical ViT on a 1/16 token grid; most blocks use non-overlapping
  window attention (padding the grid to window multiples, so any input size works), the blocks
  in ``global_attn_indexes`` attend globally; absolute position embeddings are interpolated from
  the pre-training grid (a class-token position in an MAE/DeiT checkpoint is dropped when
  loading) and decomposed relative position biases are optional (``use_rel_pos``).
* ``SimpleFeaturePyramid``: the ViTDet neck building strides 4/8/16/32 (+ an optional 1/64
  max-pool level for RPNs) from the single 1/16 map.

Reused OpenMMLab parts: mmcv ``PatchEmbed`` (adaptive corner padding) and ``FFN`` with
``DropPath``, mmpretrain ``build_norm_layer``, ``resize_pos_embed``, ``LayerNorm2d`` and SAM's
``window_partition`` / ``window_unpartition`` / ``add_decomposed_rel_pos``. The attention step is
``PlainViTAttention.attention`` with the key grid given, so DropKey
(``Regularized(host='PlainViT', dropkey=...)``) and attention-map diagnostics work as on any other
host; DropKey's block/cross variants use the window (or the global grid) as the key grid.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN, PatchEmbed
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.backbones.vit_sam import (add_decomposed_rel_pos, window_partition,
                                                 window_unpartition)
from mmpretrain.models.utils import LayerNorm2d, build_norm_layer, resize_pos_embed

from mmvitreg.ops.token_grid import TokenGrid
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.attention import AttentionSlot

__all__ = ['PlainViT', 'PlainViTAttention', 'PlainViTBlock', 'ConvStem', 'SimpleFeaturePyramid']


class PlainViTAttention(AttentionSlot, BaseModule):
    """Multi-head self-attention on a ``(B, H, W, C)`` token grid, optional decomposed rel-pos.

    Args:
        embed_dims: channels. num_heads: heads. qkv_bias: bias of the qkv projection.
        use_rel_pos: add MViTv2/ViTDet decomposed relative position biases.
        rel_pos_size: ``(H, W)`` the rel-pos tables are sized for (interpolated otherwise).
        attn_drop, proj_drop: dropout rates.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 use_rel_pos: bool = False, rel_pos_size: Optional[Tuple[int, int]] = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'PlainViT embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if rel_pos_size is None:
                raise ValueError('PlainViTAttention with use_rel_pos=True needs rel_pos_size')
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, self.head_dims))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, self.head_dims))
            trunc_normal_(self.rel_pos_h, std=0.02)
            trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N = H * W
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dims)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d)
        bias = None
        if self.use_rel_pos:
            flat_q = q.reshape(B * self.num_heads, N, self.head_dims)
            zeros = flat_q.new_zeros(B * self.num_heads, N, N)
            bias = add_decomposed_rel_pos(zeros, flat_q, self.rel_pos_h, self.rel_pos_w,
                                          (H, W), (H, W)).view(B, self.num_heads, N, N)
        out = self.attention(q, k, v, attn_mask=bias,
                             dropout_p=self.attn_drop if self.training else 0.0,
                             grid=TokenGrid((H, W), 0))
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(out))


class PlainViTBlock(BaseModule):
    """Pre-norm transformer block with window (``window_size > 0``) or global attention."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int,
                 window_size: int = 0, input_size: Tuple[int, int] = (14, 14),
                 use_rel_pos: bool = False, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_cfg: dict = dict(type='LN', eps=1e-6), act_cfg: dict = dict(type='GELU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.window_size = window_size
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)
        self.attn = PlainViTAttention(
            embed_dims, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
            rel_pos_size=(window_size, window_size) if window_size > 0 else tuple(input_size),
            attn_drop=attn_drop_rate, proj_drop=drop_rate)
        self.drop_path = build_dropout_path(drop_path_rate)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)
        self.ffn = FFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                       ffn_drop=drop_rate,
                       dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
                       act_cfg=act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.ln1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + self.drop_path(x)
        return self.ffn(self.ln2(x), identity=x)


class ConvStem(BaseModule):
    """Convolutional patch embedding (Xiao et al., "Early Convolutions Help Transformers See
    Better", NeurIPS 2021): 3x3 stride-2 convolutions with BatchNorm and ReLU, one per entry of
    ``channels``, then a 1x1 projection to ``embed_dims``; the stride is ``2 ** len(channels)``.
    Returns ``(tokens (B, H*W, C), (H, W))`` like mmcv's ``PatchEmbed``; odd sizes are padded
    by the convolutions (output ``ceil(size / stride)``).
    """

    def __init__(self, in_channels: int, embed_dims: int, channels: Sequence[int],
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        layers, dim = [], in_channels
        for out in channels:
            layers += [nn.Conv2d(dim, out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            dim = out
        layers.append(nn.Conv2d(dim, embed_dims, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.layers(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def build_dropout_path(rate: float) -> nn.Module:
    from mmcv.cnn.bricks.drop import DropPath
    return DropPath(rate) if rate > 0 else nn.Identity()


@MODELS.register_module()
class PlainViT(BaseBackbone):
    """Plain (non-hierarchical) ViT backbone for detection, ViTDet style.

    Args:
        arch: ``'base'``/``'large'``/``'huge'`` or a dict with ``embed_dims``, ``num_layers``,
            ``num_heads``, ``feedforward_channels``, ``global_attn_indexes``.
        img_size: typical input size (sets the global rel-pos table size).
        patch_size: patch size (16 in ViTDet).
        conv_stem: channels of a convolutional stem (:class:`ConvStem`) replacing the linear
            patch embedding; its stride ``2 ** len(conv_stem)`` must equal ``patch_size``.
            Empty (default): ViTDet's linear patch embedding.
        pretrain_img_size: image size of the pre-training checkpoint (abs pos-embed grid).
        window_size: window of the non-global blocks (14 in ViTDet).
        use_abs_pos / use_rel_pos: absolute / decomposed relative position embeddings.
        drop_path_rate: stochastic depth (linearly increasing). out_indices: blocks to output.
    Inputs of any size work (patch embedding and windows pad as needed).
    """
    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, num_layers=12, num_heads=12,
                                            feedforward_channels=3072,
                                            global_attn_indexes=(2, 5, 8, 11))),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=1024, num_layers=24, num_heads=16,
                                             feedforward_channels=4096,
                                             global_attn_indexes=(5, 11, 17, 23))),
        **dict.fromkeys(['h', 'huge'], dict(embed_dims=1280, num_layers=32, num_heads=16,
                                            feedforward_channels=5120,
                                            global_attn_indexes=(7, 15, 23, 31))),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 1024,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 pretrain_img_size: int = 224,
                 window_size: int = 14,
                 use_abs_pos: bool = True,
                 use_rel_pos: bool = True,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 out_indices: Union[int, Sequence[int]] = -1,
                 interpolate_mode: str = 'bicubic',
                 conv_stem: Sequence[int] = (),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'PlainViT arch must be one of {sorted(set(self.arch_zoo))} '
                                 f'or a dict, got {arch!r}')
            arch = self.arch_zoo[arch.lower()]
        arch = dict(arch)
        missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
        if missing:
            raise ValueError(f'PlainViT arch dict is missing {sorted(missing)}')
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        global_idx = set(arch.get('global_attn_indexes', ()))
        self.patch_size = patch_size
        self.interpolate_mode = interpolate_mode
        if conv_stem:
            if 2**len(conv_stem) != patch_size:
                raise ValueError(f'PlainViT conv_stem {tuple(conv_stem)} has stride '
                                 f'{2**len(conv_stem)}, which must equal patch_size '
                                 f'({patch_size})')
            self.patch_embed = ConvStem(in_channels, self.embed_dims, conv_stem)
        else:
            self.patch_embed = PatchEmbed(in_channels=in_channels, embed_dims=self.embed_dims,
                                          conv_type='Conv2d', kernel_size=patch_size,
                                          stride=patch_size, padding='corner')
        self.pretrain_grid = (pretrain_img_size // patch_size, ) * 2
        self.use_abs_pos = use_abs_pos
        if use_abs_pos:
            self.pos_embed = nn.Parameter(
                torch.zeros(1, self.pretrain_grid[0] * self.pretrain_grid[1], self.embed_dims))
            self._register_load_state_dict_pre_hook(self._prepare_pos_embed)
        self.drop_after_pos = nn.Dropout(p=drop_rate)
        grid = (img_size // patch_size, img_size // patch_size)
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.layers = ModuleList([
            PlainViTBlock(self.embed_dims, arch['num_heads'], arch['feedforward_channels'],
                          window_size=0 if i in global_idx else window_size, input_size=grid,
                          use_rel_pos=use_rel_pos, qkv_bias=qkv_bias, drop_rate=drop_rate,
                          drop_path_rate=dpr[i], norm_cfg=norm_cfg)
            for i in range(self.num_layers)
        ])
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = [i % self.num_layers for i in out_indices]

    def init_weights(self) -> None:
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            if self.use_abs_pos:
                trunc_normal_(self.pos_embed, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Drop a class-token position and resize to the pre-training grid when loading."""
        name = prefix + 'pos_embed'
        if name not in state_dict:
            return
        pe = state_dict[name]
        n = pe.shape[1]
        side = int(round((n - 1)**0.5))
        if side * side == n - 1:  # MAE / DeiT checkpoint with a class token
            pe, n = pe[:, 1:], n - 1
        side = int(round(n**0.5))
        if (side, side) != self.pretrain_grid:
            pe = resize_pos_embed(pe, (side, side), self.pretrain_grid,
                                  mode=self.interpolate_mode, num_extra_tokens=0)
        state_dict[name] = pe

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B = x.shape[0]
        x, hw = self.patch_embed(x)
        if self.use_abs_pos:
            x = x + resize_pos_embed(self.pos_embed, self.pretrain_grid, hw,
                                     mode=self.interpolate_mode, num_extra_tokens=0)
        x = self.drop_after_pos(x).view(B, hw[0], hw[1], self.embed_dims)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid: multi-scale maps from the last 1/16 feature map.

    Args:
        in_channels: channels of the backbone map. out_channels: channels of every level.
        scale_factors: resampling of each level relative to the input map (4 = stride 4 from
            stride 16 via two 2x transposed convs; 0.5 = 2x2 max-pool).
        num_outs: number of outputs; extra levels beyond ``scale_factors`` are 1x1 max-pools
            with stride 2 of the last level (ViTDet's ``LastLevelMaxPool`` for RPN P6).
        norm_cfg: norm after each conv (``LN2d`` as in ViTDet).
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6), init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_outs < len(scale_factors):
            raise ValueError(f'SimpleFeaturePyramid num_outs ({num_outs}) must be >= the number '
                             f'of scale_factors ({len(scale_factors)})')
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        for scale in scale_factors:
            dim = in_channels
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                          LayerNorm2d(dim // 2, eps=1e-6), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                dim = dim // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim = dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise ValueError(f'SimpleFeaturePyramid scale_factors must be in '
                                 f'(4.0, 2.0, 1.0, 0.5), got {scale}')
            layers += [nn.Conv2d(dim, out_channels, 1, bias=False),
                       build_norm_layer(norm_cfg, out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       build_norm_layer(norm_cfg, out_channels)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
