"""The ``reattention`` key of ``Regularized``: DeepViT's Re-attention on attention layers.

Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer", Eq. 5::

    ReAttention(Q, K, V) = Norm(Theta^T Softmax(Q K^T / sqrt(d))) V

The head transform and its normalisation are a :class:`HeadMixing` child named ``reattention``
of each chosen attention module; its stage (:class:`ReattentionStage`, phase ``'mixing'``)
applies it after the softmax (and after attention dropout, as the official code does); the
maths is the pure function :func:`reattend`.
Official code (``zhoudaquan/dvit_repo``, ``ReAttention``): ``Theta`` is a 1x1 ``nn.Conv2d(H, H)``
with bias (``reatten_matrix``), ``Norm`` is ``nn.BatchNorm2d(H)`` (``var_norm``), PyTorch's default
initialisation; DeepViT-S multiplies the normalised maps by ``head_dim ** -0.5``
(``transform_scale=True``). The parameter names are the official ones under the child:
``<attn>.reattention.reatten_matrix.weight``, ``<attn>.reattention.var_norm.running_mean``, ...

Config::

    model = dict(backbone=dict(type='Regularized', host='VisionTransformer',
                               reattention=dict(last_k=4)))
"""
import numbers
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..attention import add_attention_stage, find_attention_modules, install_attention_site
from ..registry import SummaryRow, check_options, register_regularizer
from ..stage import AttentionCall, AttentionStage, register_attention_stage

__all__ = ['reattend', 'HeadMixing', 'ReattentionStage', 'attach_reattention', 'select_layers',
           'reattention_layer_indices', 'CHILD']

CHILD = 'reattention'

_TRANSFORM_INITS = ('default', 'identity')
_OPTIONS = ('last_k', 'layers', 'targets', 'transform_scale', 'norm_cfg', 'transform_init')


def reattend(attn: Tensor,
             weight: Tensor,
             bias: Optional[Tensor] = None,
             norm: Optional[Callable[[Tensor], Tensor]] = None,
             scale: float = 1.0) -> Tensor:
    """Regenerate attention maps by mixing heads: ``norm(Theta^T attn + bias) * scale``.

    Args:
        attn: attention maps ``(B, H, N, M)`` (softmax probabilities after attention dropout).
        weight: the head transform, ``(H, H)`` or a 1x1 conv weight ``(H, H, 1, 1)``; output head
            ``g`` is ``sum_h weight[g, h] * attn[:, h]`` (the paper's ``Theta^T``).
        bias: ``(H,)`` per-output-head bias (the official 1x1 conv has one) or ``None``.
        norm: normalisation over the head channel (official ``nn.BatchNorm2d(H)``) or ``None``.
        scale: multiplies the normalised maps (``head_dim ** -0.5`` in DeepViT-S, else 1).
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
    # the official 1x1 nn.Conv2d(H, H) over the head channel as one (H x H) @ (H x N*M) product
    # per image: the same sums without the convolution's overhead
    mixed = torch.matmul(weight.to(attn.dtype), attn.flatten(2)).view_as(attn)
    if bias is not None:
        mixed = mixed + bias.to(attn.dtype).view(1, heads, 1, 1)
    if norm is not None:
        mixed = norm(mixed)
    if scale != 1.0:
        mixed = mixed * scale
    return mixed


def _build_norm(norm_cfg: Optional[dict], heads: int) -> nn.Module:
    if norm_cfg is None:
        return nn.Identity()
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', 'BN')
    layers = {'BN': nn.BatchNorm2d, 'BN2d': nn.BatchNorm2d, 'SyncBN': nn.SyncBatchNorm}
    if kind not in layers:
        raise ValueError(f'Re-attention norm_cfg type must be one of {sorted(layers)} or '
                         f'norm_cfg=None, got {kind!r}')
    cfg.pop('requires_grad', None)
    return layers[kind](heads, **cfg)


class HeadMixing(nn.Module):
    """Re-attention's head transform ``reatten_matrix`` + normalisation ``var_norm``.

    Args:
        num_heads: heads ``H`` of the attention.
        scale: multiplies the normalised maps (``head_dim ** -0.5`` for ``transform_scale``).
        norm_cfg: ``dict(type='BN')`` (official), ``'SyncBN'``, or None (identity).
        transform_init: ``'default'`` (PyTorch's conv init, official) or ``'identity'``
            (``Theta = I``, zero bias: starts from plain attention up to the normalisation).
    """

    def __init__(self, num_heads: int, scale: float = 1.0, norm_cfg: Optional[dict] = dict(
            type='BN'), transform_init: str = 'default') -> None:
        super().__init__()
        if transform_init not in _TRANSFORM_INITS:
            raise ValueError(f'Re-attention transform_init must be one of {_TRANSFORM_INITS}, '
                             f'got {transform_init!r}')
        self.num_heads = num_heads
        self.scale = scale
        self.transform_init = transform_init
        self.reatten_matrix = nn.Conv2d(num_heads, num_heads, kernel_size=1, stride=1)
        self.var_norm = _build_norm(norm_cfg, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
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
        """Keep the official init whatever a parent ``init_cfg`` did (mmengine applies a parent's
        ``init_cfg`` before children's ``init_weights`` and ``Pretrained`` after them)."""
        self.reset_parameters()

    def forward(self, probs: Tensor) -> Tensor:
        return reattend(probs, self.reatten_matrix.weight, self.reatten_matrix.bias,
                        self.var_norm, self.scale)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, scale={self.scale:.4g}, init={self.transform_init!r}'


@register_attention_stage
class ReattentionStage(AttentionStage):
    """Re-attention mixes the heads of the attention maps after the softmax (and after the
    attention dropout), before they multiply ``V``."""

    child = CHILD
    phase = 'mixing'

    def apply(self, mixing: nn.Module, probs: Tensor, call: AttentionCall) -> Tensor:
        return mixing(probs)


def select_layers(num: int, last_k: Optional[int], layers: Optional[Sequence[int]]) -> List[int]:
    """Indices among ``num`` attention layers: explicit ``layers``, the last ``last_k``, or all."""
    if last_k is not None and layers is not None:
        raise ValueError('reattention takes either `last_k` or `layers`, not both')
    if layers is not None:
        out = []
        if isinstance(layers, (str, int)):
            raise TypeError(f'reattention layers must be a list of layer indices, got {layers!r}')
        for i in layers:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise TypeError(f'reattention layers must hold integer layer indices, got {i!r} '
                                f'in {layers!r}')
            if not -num <= int(i) < num:
                raise ValueError(f'reattention layer index {i} is out of range for '
                                 f'{num} attention layers')
            out.append(int(i) % num)
        return sorted(set(out))
    if last_k is None:
        return list(range(num))
    if isinstance(last_k, bool) or not isinstance(last_k, numbers.Integral):
        raise TypeError(f'reattention last_k must be an integer, got {last_k!r}')
    if not 0 <= int(last_k) <= num:
        raise ValueError(f'reattention last_k must be in [0, {num}], got {last_k}')
    return list(range(num - int(last_k), num))


@register_regularizer('reattention')
def attach_reattention(model: nn.Module, cfg: dict) -> List[SummaryRow]:
    """Give the chosen attention layers of ``model`` Re-attention, in place.

    Options: ``last_k`` (the last K attention layers; default all) or ``layers`` (indices among
    the attention layers under ``targets``, a module-path pattern, default all),
    ``transform_scale`` (False), ``norm_cfg`` (``dict(type='BN')``) and ``transform_init``
    (``'default'``). Host weights are kept; only ``reattention`` children are added.
    """
    cfg = check_options('reattention', cfg, _OPTIONS)
    found = find_attention_modules(model, cfg.get('targets') or '', 'Re-attention')
    if not found:
        raise ValueError(f'reattention found no supported attention module in '
                         f'{type(model).__name__}')
    transform_scale = cfg.get('transform_scale', False)
    if not isinstance(transform_scale, bool):
        raise TypeError(f'reattention transform_scale must be True or False, got '
                        f'{transform_scale!r}')
    rows: List[SummaryRow] = []
    for i in select_layers(len(found), cfg.get('last_k'), cfg.get('layers')):
        name, module = found[i]
        if CHILD in module._modules:
            continue
        site = install_attention_site(module)
        scale = site.head_dim()**-0.5 if transform_scale else 1.0
        mixing = HeadMixing(site.num_heads(), scale, cfg.get('norm_cfg', dict(type='BN')),
                            cfg.get('transform_init', 'default'))
        add_attention_stage(module, CHILD, mixing)
        rows.append((name, 'Re-attention', mixing.extra_repr()))
    return rows


def reattention_layer_indices(model: nn.Module, targets: str = '') -> List[int]:
    """Indices (among the model's attention layers) that use Re-attention."""
    return [i for i, (_, m) in enumerate(find_attention_modules(model, targets))
            if CHILD in m._modules]
