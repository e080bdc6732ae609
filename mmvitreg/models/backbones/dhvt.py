"""DHVT backbone (Lu et al., NeurIPS 2022) for mmpretrain classification and mmdet detection.

Architecture (official ``ArieSeirack/DHVT``): SOPE patch embedding (no absolute position
embedding) -> class token -> ``num_layers`` x :class:`~mmvitreg.models.layers.dhvt_layers.DHVTBlock`
(HI-MHSA + DAFF) -> final LayerNorm. With mmpretrain's ``VisionTransformerClsHead`` on the class
token, parameter counts equal the official models (see ``tests/models/test_dhvt.py``).

Outputs (``out_type``), one per index of ``out_indices``:

* ``'cls_token'`` ``(B, C)`` - for ``VisionTransformerClsHead`` / ``LinearClsHead``;
* ``'raw'`` ``(B, 1 + H*W, C)``; ``'avg_featmap'`` ``(B, C)`` (mean of patch tokens);
* ``'featmap'`` ``(B, C, H, W)`` - for DRLoc and detection. ``H, W = ceil(in / patch_size)``;
  non-square grids work (the official code assumes square ones).

The final LayerNorm (``ln1``) is applied to the output of the last layer only (as mmpretrain's
``VisionTransformer``). The token grid of the latest forward is kept in ``self.patch_resolution``.

Detection: ``out_type='featmap'`` gives the single stride-``patch_size`` map of any (also
non-square) input; mmvitreg's ``SimpleFeaturePyramid`` neck (ViTDet) turns it into the
multi-scale maps mmdet heads expect (see ``configs/dhvt/retinanet_dhvt-small-p16_sfp_1x_coco.py``).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone

from mmvitreg.models.layers.dhvt_layers import SOPE, DHVTBlock, tokens_to_map
from mmvitreg.registry import MODELS

__all__ = ['DHVT']


@MODELS.register_module()
class DHVT(BaseBackbone):
    """Dynamic Hybrid Vision Transformer.

    Args:
        arch: ``'tiny'`` (192-d, 12 layers, 4 heads) / ``'small'`` (384-d, 12 layers, 8 heads) -
            the official CIFAR settings - or a dict with ``embed_dims``, ``num_layers``,
            ``num_heads``, ``feedforward_channels``. The official ImageNet / 224px models use
            3 / 6 heads: pass ``num_heads``.
        num_heads: overrides the arch's number of heads.
        patch_size: power of two (official: 2 or 4 for 32x32 inputs, 16 for 224x224).
        in_channels: input channels.
        img_size: nominal input size (int or ``(H, W)``), informational only - any size is
            accepted; default 32 for ``patch_size <= 4``, else 224 (see :class:`SOPE`).
        out_indices: layer indices whose outputs are returned (negative counts from the end).
        out_type: ``'cls_token'``, ``'raw'``, ``'featmap'`` or ``'avg_featmap'``.
        drop_rate, attn_drop_rate, drop_path_rate: dropout after attention projection, attention
            dropout, stochastic-depth rate (linearly increasing over layers, official rule).
        qkv_bias: bias of the ``qkv`` projection (official: True).
        norm_cfg: LayerNorm config of the blocks and the final norm.
        sope_norm_cfg: SOPE norm (official: SyncBN; default BN).
        ffn_norm_cfg: DAFF norm (BN).
        final_norm: apply the final LayerNorm ``ln1`` to the last layer's output.
        norm_eval: keep BatchNorm layers in eval mode while training (detection fine-tuning).
        init_cfg: mmengine init config; ``None`` uses the official initialisation (truncated
            normal 0.02 for linear weights, zero biases, unit/zero norms, PyTorch-default convs).
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=192, num_layers=12, num_heads=4,
                                             feedforward_channels=768)),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=384, num_layers=12, num_heads=8,
                                              feedforward_channels=1536)),
    }
    OUT_TYPES = {'raw', 'cls_token', 'featmap', 'avg_featmap'}
    num_extra_tokens = 1

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 num_heads: Optional[int] = None,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 img_size: Optional[Union[int, Tuple[int, int]]] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 sope_norm_cfg: dict = dict(type='BN'),
                 ffn_norm_cfg: dict = dict(type='BN'),
                 final_norm: bool = True,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise KeyError(f'DHVT arch must be one of {sorted(self.arch_zoo)}, got {arch!r}')
            settings = dict(self.arch_zoo[arch.lower()])
        else:
            missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
            if missing:
                raise KeyError(f'DHVT custom arch is missing keys {sorted(missing)}')
            settings = dict(arch)
        if num_heads is not None:
            settings['num_heads'] = num_heads
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'DHVT out_type must be one of {sorted(self.OUT_TYPES)}, '
                             f'got {out_type!r}')
        self.arch_settings = settings
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']
        self.num_heads = settings['num_heads']
        self.patch_size = patch_size
        self.out_type = out_type
        self.final_norm = final_norm
        self.norm_eval = norm_eval

        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        for i, index in enumerate(indices):
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(f'DHVT out_indices must be in [-{self.num_layers}, '
                                 f'{self.num_layers - 1}], got {index}')
            indices[i] = index % self.num_layers
        self.out_indices = indices

        self.patch_embed = SOPE(in_channels, self.embed_dims, patch_size, norm_cfg=sope_norm_cfg,
                                input_size=img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        trunc_normal_(self.cls_token, std=.02)
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.layers = nn.ModuleList([
            DHVTBlock(self.embed_dims, self.num_heads, settings['feedforward_channels'],
                      qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                      drop_path_rate=dpr[i], norm_cfg=norm_cfg, ffn_norm_cfg=ffn_norm_cfg)
            for i in range(self.num_layers)
        ])
        if final_norm:
            self.ln1 = build_norm_layer(norm_cfg, self.embed_dims)[1]
        if out_type == 'avg_featmap':
            self.ln2 = build_norm_layer(norm_cfg, self.embed_dims)[1]
        self.patch_resolution: Optional[Tuple[int, int]] = None
        self._official_init()

    # ------------------------------------------------------------------ init
    def _official_init(self) -> None:
        """Official DHVT initialisation (timm ``_init_vit_weights``, non-jax mode)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        if self.init_cfg is None:
            self._official_init()  # idempotent in distribution; keeps mmengine's bookkeeping
            self._is_init = True
            return
        super().init_weights()

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)
        self.patch_resolution = hw_shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, hw_shape)
            if i == self.num_layers - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw_shape))
        return tuple(outs)

    def _format_output(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        if self.out_type == 'featmap':
            return tokens_to_map(x[:, 1:], hw_shape)
        return self.ln2(x[:, 1:].mean(dim=1))

    def train(self, mode: bool = True) -> 'DHVT':
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer depth for layer-wise lr decay (mmpretrain ``LearningRateDecayOptimWrapper``)."""
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', ) or name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers
