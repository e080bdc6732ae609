#!/usr/bin/env python
"""Convert an official DeepViT checkpoint (zhoudaquan/dvit_repo, timm ``train.py``) to mmvitreg.

Examples::

    # full classifier (mmpretrain ImageClassifier: backbone.* + head.layers.head.*)
    python tools/model_converters/deepvit_to_mmvitreg.py DViT_S.pth.tar deepvit-s_in1k.pth
    # EMA weights, backbone only (init_cfg=dict(type='Pretrained', ...) of a DeepViT backbone)
    python tools/model_converters/deepvit_to_mmvitreg.py ckpt.pth.tar out.pth --ema --backbone-only

The architecture is inferred from the weights (``deepvit-16/24/32/s/l``) and the result is
checked by loading it strictly into the matching mmvitreg ``DeepViT``; pass ``--arch`` to insist
on one. The key mapping is the pure function :func:`convert_deepvit` (and its inverse
:func:`convert_mmvitreg_to_official`), importable by tests.
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.checkpoint import load_official_checkpoint  # noqa: E402

# (official regex, mmvitreg replacement) for backbone keys (no `module.` prefix).
_RULES: List[Tuple[str, str]] = [
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.PROJ.\1'),  # resolved per stem below
    (r'^patch_embed\.(conv[12]\.weight)$', r'patch_embed.\1'),
    (r'^patch_embed\.(bn[12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$',
     r'patch_embed.\1'),
    (r'^blocks\.(\d+)\.norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$', r'layers.\1.attn.\2.\3'),
    (r'^blocks\.(\d+)\.attn\.reatten_matrix\.(weight|bias)$',
     r'layers.\1.attn.reattention.reatten_matrix.\2'),
    (r'^blocks\.(\d+)\.attn\.var_norm\.(weight|bias|running_mean|running_var|num_batches_tracked)$',
     r'layers.\1.attn.reattention.var_norm.\2'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$', r'layers.\1.ffn.layers.0.0.\2'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$', r'layers.\1.ffn.layers.1.\2'),
    (r'^norm\.(weight|bias)$', r'ln1.\1'),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]
_HEAD = re.compile(r'^head\.(weight|bias)$')

# inverse mapping (mmvitreg backbone key -> official)
_INVERSE: List[Tuple[str, str]] = [
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^patch_embed\.projection\.(weight|bias)$', r'patch_embed.proj.\1'),
    (r'^patch_embed\.((?:conv[12]|bn[12]|proj)\..+)$', r'patch_embed.\1'),
    (r'^layers\.(\d+)\.ln([12])\.(weight|bias)$', r'blocks.\1.norm\2.\3'),
    (r'^layers\.(\d+)\.attn\.reattention\.(.+)$', r'blocks.\1.attn.\2'),
    (r'^layers\.(\d+)\.attn\.(.+)$', r'blocks.\1.attn.\2'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$', r'blocks.\1.mlp.fc1.\2'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$', r'blocks.\1.mlp.fc2.\2'),
    (r'^ln1\.(weight|bias)$', r'norm.\1'),
]
_INVERSE_COMPILED = [(re.compile(p), r) for p, r in _INVERSE]


def _strip_module(key: str) -> str:
    return key[len('module.'):] if key.startswith('module.') else key


def convert_deepvit(state_dict: Mapping[str, torch.Tensor],
                    backbone_only: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official DeepViT state dict (``DeepVisionTransformer``) to mmvitreg keys.

    Args:
        state_dict: official weights (a leading ``module.`` from DDP is stripped).
        backbone_only: return ``DeepViT`` backbone keys (no ``backbone.`` prefix, head dropped);
            otherwise an mmpretrain ``ImageClassifier`` state dict (``backbone.*`` and
            ``head.layers.head.*`` of ``VisionTransformerClsHead``).

    Raises:
        KeyError: when a key is not part of the official DeepViT layout.
    """
    keys = [_strip_module(k) for k in state_dict]
    conv_stem = any(k.startswith('patch_embed.conv1.') for k in keys)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for raw_key, value in state_dict.items():
        key = _strip_module(raw_key)
        if _HEAD.match(key):
            if not backbone_only:
                out[_HEAD.sub(r'head.layers.head.\1', key)] = value
            continue
        new = ''
        for pattern, repl in _COMPILED:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                break
        if not new:
            unknown.append(key)
            continue
        new = new.replace('PROJ', 'proj' if conv_stem else 'projection')
        out[new if backbone_only else f'backbone.{new}'] = value
    if unknown:
        raise KeyError(f'not an official DeepViT checkpoint: unknown keys {unknown[:5]}'
                       f'{" ..." if len(unknown) > 5 else ""}')
    if not any(k.startswith('blocks.') for k in keys):
        raise KeyError('not an official DeepViT checkpoint: it has no `blocks.*` weights')
    return out


def convert_mmvitreg_to_official(
        state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Inverse of :func:`convert_deepvit` (classifier or backbone-only mmvitreg keys)."""
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.layers.head.'):
            out['head.' + key[len('head.layers.head.'):]] = value
            continue
        key = key[len('backbone.'):] if key.startswith('backbone.') else key
        for pattern, repl in _INVERSE_COMPILED:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            raise KeyError(f'not an mmvitreg DeepViT state dict: unknown key {key!r}')
    return out


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The ``DeepViT`` ``arch`` (a zoo name, or a dict) that an official state dict has."""
    from mmvitreg.models.backbones.deepvit import DeepViT
    sd = {_strip_module(k): v for k, v in state_dict.items()}
    if 'cls_token' not in sd or 'blocks.0.attn.qkv.weight' not in sd:
        raise KeyError('not an official DeepViT checkpoint: it has no cls_token or '
                       'blocks.0.attn.qkv.weight')
    dim = sd['cls_token'].shape[-1]
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    hidden = sd['blocks.0.mlp.fc1.weight'].shape[0]
    reatt = sorted({int(k.split('.')[1]) for k in sd if '.attn.reatten_matrix.' in k})
    heads = sd[f'blocks.{reatt[0]}.attn.reatten_matrix.weight'].shape[0] if reatt else None
    conv_stem = 'patch_embed.conv1.weight' in sd
    for name, arch in DeepViT.arch_zoo.items():
        if (arch['embed_dims'], arch['num_layers'], arch['feedforward_channels']) == \
                (dim, depth, hidden) and (arch['stem'] == 'conv') == conv_stem and \
                reatt == list(range(depth - arch['reattention_last_k'], depth)) and \
                heads in (None, arch['num_heads']):
            return dict(name=name)
    raise KeyError(f'the checkpoint (dim {dim}, depth {depth}, MLP {hidden}, Re-attention in '
                   f'blocks {reatt}) matches no DeepViT arch; pass --arch')


def check_loadable(converted: Mapping[str, torch.Tensor], arch: Union[str, dict],
                   backbone_only: bool = False, img_size: int = 224,
                   patch_size: int = 16) -> None:
    """Load ``converted`` strictly into an mmvitreg DeepViT; one-sentence error on mismatch."""
    import mmvitreg  # noqa: F401
    from mmvitreg.models.backbones.deepvit import DeepViT
    from mmvitreg.registry import MODELS
    dim = DeepViT._resolve_arch(arch)['embed_dims']
    backbone = dict(type='DeepViT', arch=arch, img_size=img_size, patch_size=patch_size)
    if backbone_only:
        model = MODELS.build(backbone)
    else:
        num_classes = converted['head.layers.head.weight'].shape[0] \
            if 'head.layers.head.weight' in converted else 1000
        model = MODELS.build(dict(
            type='ImageClassifier', backbone=backbone,
            head=dict(type='VisionTransformerClsHead', num_classes=num_classes,
                      in_channels=dim)))
    own = model.state_dict()
    shapes = [k for k, v in own.items()
              if k in converted and tuple(converted[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    if not (missing or unexpected or shapes):
        model.load_state_dict(converted, strict=True)
    else:
        raise KeyError(f'the converted weights do not fit DeepViT arch {arch!r}: missing '
                       f'{missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {shapes[:3]}')


def extract_state_dict(checkpoint: Mapping, ema: bool = False) -> Dict[str, torch.Tensor]:
    """Model weights of an official checkpoint (timm: ``state_dict``/``state_dict_ema``;
    DeiT-style: ``model``/``model_ema``); a bare state dict is returned as is."""
    candidates = ('state_dict_ema', 'model_ema') if ema else ('state_dict', 'model')
    for key in candidates:
        if key in checkpoint:
            return checkpoint[key]
    if ema:
        raise KeyError(f"--ema needs a 'state_dict_ema' or 'model_ema' entry; the checkpoint "
                       f'has {sorted(checkpoint)[:8]}')
    return dict(checkpoint)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official DeepViT checkpoint (.pth / .pth.tar)')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--arch', default=None,
                        help='deepvit-16/24/32/s/l (default: inferred from the weights)')
    parser.add_argument('--ema', action='store_true', help='convert the EMA weights')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write DeepViT backbone keys only (no classifier head)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='input size the checkpoint was trained at (384 for DeepViT-L-384)')
    args = parser.parse_args(argv)
    try:
        state_dict = extract_state_dict(load_official_checkpoint(args.src), ema=args.ema)
        arch = args.arch or infer_arch(state_dict)['name']
        converted = convert_deepvit(state_dict, backbone_only=args.backbone_only)
        check_loadable(converted, arch, args.backbone_only, args.img_size)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f'error: {msg}', file=sys.stderr)
        sys.exit(1)
    torch.save(dict(state_dict=converted,
                    meta=dict(source=osp.basename(args.src), arch=arch)), args.dst)
    print(f'converted {len(converted)} tensors ({arch}) -> {args.dst}')


if __name__ == '__main__':
    main()
