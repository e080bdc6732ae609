"""DeepViT backbones (Zhou et al. 2021) built from mmpretrain's ``VisionTransformer``.

Architectures follow the official code (``zhoudaquan/dvit_repo``, ``deep_vision_transformer.py``):

============  =====  ======  =====  =========  ================  ===========  =========  ========
arch          depth  dim     heads  MLP ratio  Re-attention      stem         res. scale  params*
============  =====  ======  =====  =========  ================  ===========  =========  ========
deepvit-16    16     384     12     3          all 16            patch 16x16  1          24.43M
deepvit-24    24     384     12     3          all 24            patch 16x16  1          36.26M
deepvit-32    32     384     12     3          all 32            patch 16x16  1          48.10M
deepvit-s     16     396     12     3          last 5 (scaled)   conv stem    0.5        27.31M
deepvit-l     32     420     12     3          last 12           conv stem    0.5        58.88M
============  =====  ======  =====  =========  ================  ===========  =========  ========

\\* with a 1000-class linear head on the class token, as the official models count them
(BatchNorm running statistics are buffers, not parameters).

Official details reproduced:

* qkv bias, LayerNorm eps 1e-6, class token, final norm, class-token output;
* *residual scaling* (``scale_adjustment``, DeepViT-S/L): each block computes
  ``x = x + f(norm(x * a)) / a`` for its attention and MLP branches, ``a = 0.5``;
* *conv stem* (``PatchEmbed_CNN``, DeepViT-S/L): 7x7/2 conv (64, no bias) + BN + ReLU,
  3x3 conv (64, no bias) + BN + ReLU, then a ``patch/2`` strided projection to ``dim``;
* DeepViT-S scales the re-generated maps by ``head_dim ** -0.5`` (``transform_scale``);
* init: trunc-normal(0.02) Linear weights with zero bias, LayerNorm (1, 0), trunc-normal class
  token and position embedding, PyTorch defaults for convolutions and the head transform.

Blocks are mmpretrain ``TransformerEncoderLayer`` (switched to :class:`DeepViTLayer` for the
residual scale), attention is mmpretrain ``MultiheadAttention`` or its subclass
:class:`~mmvitreg.models.layers.reattention.ReAttention` (the same with a ``reattention``
head-mixing child, :mod:`mmvitreg.regularizers.stages.reattention`), so mmpretrain tooling
(layer-wise lr decay, ``out_type``, position-embedding resizing, ``frozen_stages``) keeps
working. Parameter
names differ from the official ones; ``tools/model_converters/deepvit_to_mmvitreg.py`` maps them.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import (TransformerEncoderLayer,
                                                            VisionTransformer)
from mmpretrain.models.utils import to_2tuple
from torch import Tensor

from mmvitreg.registry import MODELS
from mmvitreg.regularizers.stages.reattention import attach_reattention

__all__ = ['DeepViT', 'DeepViTLayer', 'DeepViTConvStem']


class DeepViTConvStem(BaseModule):
    """The official DeepViT-S/L patch embedding (``PatchEmbed_CNN``, following T2T-ViT).

    ``conv1`` 7x7 stride 2 (64 ch, no bias) -> BN -> ReLU -> ``conv2`` 3x3 (64 ch, no bias) ->
    BN -> ReLU -> ``proj`` ``patch_size//2`` x ``patch_size//2`` stride ``patch_size//2`` conv to
    ``embed_dims``: a total stride of ``patch_size``. Returns ``(tokens, (h, w))`` like mmcv's
    ``PatchEmbed``; parameter names follow the official code.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 384,
                 patch_size: int = 16,
                 input_size: Union[int, Tuple[int, int]] = 224,
                 stem_channels: int = 64,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if patch_size < 2 or patch_size % 2:
            raise ValueError(f'DeepViT conv stem needs an even patch_size >= 2, got {patch_size}')
        proj_size = patch_size // 2
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, stem_channels)[1]
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, stem_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(stem_channels, embed_dims, proj_size, stride=proj_size)
        h, w = to_2tuple(input_size)
        self.init_out_size = (self._out_len(h, patch_size), self._out_len(w, patch_size))

    @staticmethod
    def _out_len(size: int, patch_size: int) -> int:
        half = (size + 2 * 3 - 7) // 2 + 1
        return half // (patch_size // 2)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class DeepViTLayer(TransformerEncoderLayer):
    """mmpretrain ``TransformerEncoderLayer`` with DeepViT's residual scaling.

    ``x = x + attn(ln1(x * a)) / a``; ``x = x + ffn(ln2(x * a)) / a`` (official
    ``scale_adjustment``; ``a = 1`` is the plain pre-norm block). Parameters and their names are
    those of the mmpretrain layer. Unlike mmpretrain (xavier-uniform FFN weights) it keeps the
    official trunc-normal(0.02) init given by the backbone's ``init_cfg``.
    """

    residual_scale: float = 1.0

    @classmethod
    def from_layer(cls, layer: TransformerEncoderLayer, residual_scale: float) -> 'DeepViTLayer':
        """Switch a freshly built mmpretrain layer to this class in place."""
        if type(layer) is not TransformerEncoderLayer:
            raise ValueError(f'DeepViTLayer converts mmpretrain TransformerEncoderLayer only, '
                             f'got {type(layer).__name__}')
        if residual_scale <= 0:
            raise ValueError(f'DeepViT residual_scale must be > 0, got {residual_scale}')
        layer.__class__ = cls
        layer.residual_scale = float(residual_scale)
        layer.ffn.add_identity = False  # the residual is added (and scaled) in forward
        return layer

    def init_weights(self) -> None:
        BaseModule.init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        a = self.residual_scale
        if a == 1.0:
            x = x + self.attn(self.ln1(x))
            return x + self.ffn(self.ln2(x))
        x = x + self.attn(self.ln1(x * a)) / a
        return x + self.ffn(self.ln2(x * a)) / a


_ARCHS: Dict[str, dict] = {
    'deepvit-16': dict(embed_dims=384, num_layers=16, num_heads=12, feedforward_channels=1152,
                       reattention_last_k=16, transform_scale=False, residual_scale=1.0,
                       stem='patch'),
    'deepvit-24': dict(embed_dims=384, num_layers=24, num_heads=12, feedforward_channels=1152,
                       reattention_last_k=24, transform_scale=False, residual_scale=1.0,
                       stem='patch'),
    'deepvit-32': dict(embed_dims=384, num_layers=32, num_heads=12, feedforward_channels=1152,
                       reattention_last_k=32, transform_scale=False, residual_scale=1.0,
                       stem='patch'),
    'deepvit-s': dict(embed_dims=396, num_layers=16, num_heads=12, feedforward_channels=1188,
                      reattention_last_k=5, transform_scale=True, residual_scale=0.5,
                      stem='conv'),
    'deepvit-l': dict(embed_dims=420, num_layers=32, num_heads=12, feedforward_channels=1260,
                      reattention_last_k=12, transform_scale=False, residual_scale=0.5,
                      stem='conv'),
}
_ESSENTIAL = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')
_DEFAULTS = dict(reattention_last_k=None, transform_scale=False, residual_scale=1.0,
                 stem='patch')

_OFFICIAL_INIT = [
    dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
    dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
]


@MODELS.register_module()
class DeepViT(VisionTransformer):
    """DeepViT backbone: a ViT whose last blocks use Re-attention (see module docstring).

    Args:
        arch: one of ``'deepvit-16'``, ``'deepvit-24'``, ``'deepvit-32'``, ``'deepvit-s'``,
            ``'deepvit-l'``, or a dict with ``embed_dims``, ``num_layers``, ``num_heads``,
            ``feedforward_channels`` and optionally ``reattention_last_k`` (None = all),
            ``transform_scale``, ``residual_scale`` and ``stem`` (``'patch'``/``'conv'``).
        reattention: ``None`` keeps the arch's Re-attention layers; ``False`` turns Re-attention
            off (the plain ViT of the same shape); a dict overrides the options of the
            ``reattention`` regularizer (``last_k``/``layers``, ``norm_cfg``, ``transform_init``,
            ``transform_scale``).
        img_size, patch_size, in_channels, drop_rate, drop_path_rate, out_type, ...: as for
            mmpretrain ``VisionTransformer`` (defaults: 224, 16, LN eps 1e-6, cls-token output).
        init_cfg: defaults to the official init (trunc-normal Linear, unit LayerNorm).
    """

    arch_zoo = _ARCHS

    def __init__(self,
                 arch: Union[str, dict] = 'deepvit-s',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 reattention: Union[None, bool, dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 stem_norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[Union[dict, Sequence[dict]]] = copy.deepcopy(_OFFICIAL_INIT),
                 **kwargs) -> None:
        settings = self._resolve_arch(arch)
        super().__init__(
            arch={k: settings[k] for k in _ESSENTIAL},
            img_size=img_size,
            patch_size=patch_size,
            in_channels=in_channels,
            norm_cfg=norm_cfg,
            init_cfg=init_cfg,
            **kwargs)
        self.arch_settings = settings
        if settings['stem'] == 'conv':
            self.patch_embed = DeepViTConvStem(
                in_channels=in_channels, embed_dims=self.embed_dims, patch_size=patch_size,
                input_size=img_size, norm_cfg=stem_norm_cfg)
            if self.patch_embed.init_out_size != self.patch_resolution:
                raise ValueError(f'DeepViT conv stem gives a {self.patch_embed.init_out_size} '
                                 f'token grid for img_size {img_size}; use an img_size '
                                 f'divisible by patch_size {patch_size}')
        for i, layer in enumerate(self.layers):
            self.layers[i] = DeepViTLayer.from_layer(layer, settings['residual_scale'])
        if reattention is not False:
            reatt_cfg = dict(last_k=settings['reattention_last_k'],
                             transform_scale=settings['transform_scale'])
            if isinstance(reattention, dict):
                if 'layers' in reattention:
                    reatt_cfg.pop('last_k')
                reatt_cfg.update(reattention)
            elif reattention not in (None, True):
                raise ValueError(f'DeepViT reattention must be None, True, False or a dict, '
                                 f'got {reattention!r}')
            attach_reattention(self, reatt_cfg)
        if self.frozen_stages > 0:  # re-freeze: the patch embedding may have been replaced
            self._freeze_stages()

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(f'DeepViT arch must be one of {sorted(cls.arch_zoo)} or a dict, '
                                 f'got {arch!r}')
            return dict(cls.arch_zoo[key])
        if not isinstance(arch, dict) or not set(_ESSENTIAL) <= set(arch):
            raise ValueError(f'DeepViT custom arch needs a dict with keys {list(_ESSENTIAL)}, '
                             f'got {arch!r}')
        settings = dict(_DEFAULTS)
        settings.update(arch)
        if settings['reattention_last_k'] is None:
            settings['reattention_last_k'] = settings['num_layers']
        if settings['stem'] not in ('patch', 'conv'):
            raise ValueError(f"DeepViT stem must be 'patch' or 'conv', got {settings['stem']!r}")
        return settings

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'
        if not pretrained and self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)  # official; mmpretrain leaves zeros
