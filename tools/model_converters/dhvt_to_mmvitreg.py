#!/usr/bin/env python
"""Convert an official DHVT checkpoint (ArieSeirack/DHVT, ``main.py``) to mmvitreg's layout.

Examples::

    # full classifier (mmpretrain ImageClassifier: backbone.* + head.layers.head.*)
    python tools/model_converters/dhvt_to_mmvitreg.py checkpoint.pth dhvt-tiny-p4_cifar100.pth
    # the EMA weights, backbone only (for detection / fine-tuning: init_cfg=Pretrained)
    python tools/model_converters/dhvt_to_mmvitreg.py checkpoint.pth out.pth --ema --backbone-only

The mapping is the pure function :func:`convert_dhvt` (importable; used by the tests).
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.checkpoint import load_official_checkpoint  # noqa: E402

_SOPE_CONV = re.compile(r'^patch_embed\.proj\.(\d+)\.([01])\.(.+)$')

# (official regex, mmvitreg replacement) applied to keys without the `module.` prefix.
_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r'^cls_token$', 'cls_token'),
    (r'^patch_embed\.(pre|post)_affine\.(alpha|beta)$', r'patch_embed.\1_affine.\2'),
    (r'^blocks\.(\d+)\.norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$', r'layers.\1.attn.\2.\3'),
    (r'^blocks\.(\d+)\.attn\.ht_proj\.(weight|bias)$', r'layers.\1.attn.head_token_proj.\2'),
    (r'^blocks\.(\d+)\.attn\.ht_norm\.(weight|bias)$', r'layers.\1.attn.head_token_norm.\2'),
    (r'^blocks\.(\d+)\.attn\.pos_embed$', r'layers.\1.attn.head_pos_embed'),
    (r'^blocks\.(\d+)\.mlp\.conv1\.(weight|bias)$', r'layers.\1.ffn.pw_conv1.\2'),
    (r'^blocks\.(\d+)\.mlp\.conv2\.(weight|bias)$', r'layers.\1.ffn.dw_conv.\2'),
    (r'^blocks\.(\d+)\.mlp\.conv3\.(weight|bias)$', r'layers.\1.ffn.pw_conv2.\2'),
    (r'^blocks\.(\d+)\.mlp\.bn([123])\.(.+)$', r'layers.\1.ffn.norm\2.\3'),
    (r'^blocks\.(\d+)\.mlp\.compress\.(weight|bias)$', r'layers.\1.ffn.se_reduce.\2'),
    (r'^blocks\.(\d+)\.mlp\.excitation\.(weight|bias)$', r'layers.\1.ffn.se_expand.\2'),
    (r'^norm\.(weight|bias)$', r'ln1.\1'),
]]
_HEAD = re.compile(r'^head\.(weight|bias)$')


def _backbone_key(key: str) -> str:
    match = _SOPE_CONV.match(key)
    if match:  # Sequential(conv3x3, GELU, conv3x3, ...): even indices are Sequential(conv, BN)
        index, sub, rest = int(match.group(1)), match.group(2), match.group(3)
        return f"patch_embed.projection.{index // 2}.{'conv' if sub == '0' else 'bn'}.{rest}"
    for pattern, repl in _RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return ''


def convert_dhvt(state_dict: Mapping[str, torch.Tensor],
                 backbone_only: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """Map an official DHVT state dict to mmvitreg keys.

    Args:
        state_dict: official ``VisionTransformer(apply_dhvt=True)`` weights (a leading
            ``module.`` from DDP is stripped).
        backbone_only: return the keys of the ``DHVT`` backbone itself (no ``backbone.`` prefix,
            classifier dropped); otherwise return an mmpretrain ``ImageClassifier`` state dict
            (``backbone.*`` and ``head.layers.head.*`` for ``VisionTransformerClsHead``).

    Raises:
        KeyError: for a key the mapping does not know (e.g. a non-DHVT or distilled checkpoint).
    """
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if _HEAD.match(key):
            if not backbone_only:
                out[_HEAD.sub(r'head.layers.head.\1', key)] = value
            continue
        new = _backbone_key(key)
        if not new:
            unknown.append(key)
            continue
        out[new if backbone_only else f'backbone.{new}'] = value
    if unknown:
        raise KeyError(f'not an official DHVT checkpoint: unknown keys {unknown[:5]}'
                       f'{" ..." if len(unknown) > 5 else ""}')
    return out


def extract_state_dict(checkpoint: Mapping, ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model weights of an official checkpoint dict (``model`` or, with ``ema``,
    ``model_ema``); a bare state dict is returned as is."""
    key = 'model_ema' if ema else 'model'
    if key in checkpoint:
        return checkpoint[key]
    if ema:
        raise KeyError(f"--ema needs a 'model_ema' entry; the checkpoint has {sorted(checkpoint)}")
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict']
    return dict(checkpoint)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official DHVT checkpoint (.pth)')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--ema', action='store_true', help="convert the 'model_ema' weights")
    parser.add_argument('--backbone-only', action='store_true',
                        help='write DHVT backbone keys only (no classifier head)')
    args = parser.parse_args(argv)
    try:
        state_dict = extract_state_dict(load_official_checkpoint(args.src), ema=args.ema)
        converted = convert_dhvt(state_dict, backbone_only=args.backbone_only)
    except (FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f'error: {msg}', file=sys.stderr)
        sys.exit(1)
    torch.save(dict(state_dict=converted, meta=dict(source=osp.basename(args.src))), args.dst)
    print(f'converted {len(converted)} tensors -> {args.dst}')


if __name__ == '__main__':
    main()
