#!/usr/bin/env python
"""Visualise the attention maps of a ViT-family model for one image (one panel per layer).

Each panel shows the class token's attention to the patch tokens (models without a class token:
the attention each patch receives, averaged over queries), averaged over heads or for ``--head``,
upsampled and overlaid on the input image, all panels on one colour scale with a colour bar.
Re-attention layers show their re-generated maps. The input size is ``--img-size``, else the
config's pipelines, else the model's own (patch embedding / dataset ``img_size``).

Examples::

    python tools/visualization/vis_attention.py configs/deepvit/deepvit-s_8xb32_in1k.py ckpt.pth \
        --img demo.jpg --out attention.png
    python tools/visualization/vis_attention.py CONFIG --img demo.png --out a.png --layers 0 5 11
"""
import argparse
import math
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import CLIError, DictAction, load_config, one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint (default: freshly initialised weights)')
    parser.add_argument('--img', required=True, help='input image file')
    parser.add_argument('--out', required=True, help='output PNG file')
    parser.add_argument('--img-size', type=int, default=None,
                        help='square input size (default: the config pipelines, else the model)')
    parser.add_argument('--layers', type=int, nargs='+', default=None,
                        help='layer indices to show (default: all)')
    parser.add_argument('--head', type=int, default=None, help='one head (default: mean)')
    parser.add_argument('--stage', choices=['reattention', 'softmax'], default='reattention')
    parser.add_argument('--target', default='', help='attention modules under this path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def input_size(cfg, model) -> int:
    """Side of the square input the model was configured for (see the module docstring)."""
    from mmvitreg.testing.smoke import infer_cls_img_size
    size = infer_cls_img_size(cfg, default=None)
    if size is not None:
        return size
    patch_embed = getattr(getattr(model, 'backbone', model), 'patch_embed', None)
    init_size = getattr(patch_embed, 'init_input_size', None)
    if init_size is not None:
        return int(max(init_size))
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        img_size = ((cfg.get(key) or {}).get('dataset') or {}).get('img_size')
        if isinstance(img_size, int):
            return img_size
    raise CLIError('cannot tell the input size from the config or the model; pass --img-size')


def main(argv=None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        import mmcv
        import numpy as np
        import torch
        import torch.nn.functional as F

        from mmvitreg.utils.attention_maps import (build_model_for_analysis, cls_attention_grid,
                                                   collect_attention_maps)
        if not osp.isfile(args.img):
            raise CLIError(f'image file not found: {args.img}')
        cfg = load_config(args.config, args.cfg_options)
        model = build_model_for_analysis(cfg, args.checkpoint)
        size = args.img_size or input_size(cfg, model)
        img = mmcv.imread(args.img)  # BGR, as mmpretrain's LoadImageFromFile
        if img is None:
            raise CLIError(f'could not read image {args.img}')
        img = mmcv.imresize(img, (size, size))
        inputs = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        data = model.data_preprocessor(dict(inputs=inputs), False)
        maps = collect_attention_maps(model, data['inputs'], args.target, args.stage)
        layers = args.layers if args.layers is not None else list(range(len(maps)))
        bad = [i for i in layers if not -len(maps) <= i < len(maps)]
        if bad:
            raise CLIError(f'--layers {bad} out of range for {len(maps)} attention layers')
        num_heads = maps[0].shape[1]
        if args.head is not None and not 0 <= args.head < num_heads:
            raise CLIError(f'--head must be in [0, {num_heads}), got {args.head}')
        backbone = getattr(model, 'backbone', model)
        extra = int(getattr(backbone, 'num_extra_tokens', -1))
        panels = []
        for i in layers:
            attn = maps[i]
            num_keys = attn.shape[-1]
            if extra < 0:
                side = math.isqrt(num_keys)
                extra = num_keys - side * side
            side = math.isqrt(num_keys - extra)
            grid_side = side
            grid = cls_attention_grid(attn, (side, side), extra, args.head)[0]
            grid = F.interpolate(grid[None, None], size=(size, size), mode='nearest')[0, 0]
            panels.append((i % len(maps), grid.numpy()))
        vmin = min(float(g.min()) for _, g in panels)  # one colour scale for every panel
        vmax = max(float(g.max()) for _, g in panels)
        cols = min(len(panels) + 1, 6)
        rows = math.ceil((len(panels) + 1) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 0.6, 2.3 * rows),
                                 squeeze=False)
        rgb = img[..., ::-1]
        for ax in axes.flat:
            ax.axis('off')
        axes.flat[0].imshow(rgb)
        axes.flat[0].set_title('input')
        image = None
        for ax, (i, grid) in zip(list(axes.flat)[1:], panels):
            ax.imshow(rgb)
            image = ax.imshow(grid, cmap='jet', alpha=0.5, vmin=vmin, vmax=vmax)
            ax.set_title(f'layer {i}' + (f' head {args.head}' if args.head is not None else ''))
        fig.tight_layout()
        fig.colorbar(image, ax=list(axes.flat), fraction=0.02, pad=0.02,
                     label='attention of the class token' if extra > 0 else 'attention received')
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
        print(f'attention maps of {len(panels)} layers ({grid_side}x{grid_side} patch grid, '
              f'{size} px input, colour scale {vmin:.3g}..{vmax:.3g}) saved to {args.out}')


if __name__ == '__main__':
    main()
