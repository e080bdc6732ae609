#!/usr/bin/env python
"""Where an HOI detector's decoder queries look: one row per model, one panel per detected pair.

For each ``--model LABEL CONFIG CHECKPOINT`` (repeat it, e.g. a baseline and its DropKey variant,
as in the DropKey paper's HICO-DET figure) the image is predicted once; each of the ``--topk``
best queries (a query predicts one subject-object pair and its verbs) is drawn as its
cross-attention over the encoder's feature map in decoder layer ``--layer`` (default: the last;
softmax probabilities without dropout or DropKey, mean over heads), laid over the image with the
subject box (solid) and the object box (dashed). All panels share one colour scale. Printed per
panel: the triplet and the share of the attention inside the union of its two boxes.

Example::

    python tools/visualization/vis_hoi_attention.py scene.png --out attention.png \
        --model baseline work_dirs/base/config.py work_dirs/base/epoch_10.pth \
        --model DropKey work_dirs/dropkey/config.py work_dirs/dropkey/epoch_10.pth
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import CLIError, one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help='input image file')
    parser.add_argument('--model', nargs=3, action='append', required=True,
                        metavar=('LABEL', 'CONFIG', 'CHECKPOINT'),
                        help='a model to show (repeatable; one row each)')
    parser.add_argument('--out', required=True, help='output PNG file')
    parser.add_argument('--topk', type=int, default=3, help='queries (pairs) shown per model')
    parser.add_argument('--layer', type=int, default=-1, help='decoder layer (default: last)')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='show queries whose best triplet scores at least this')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    return parser.parse_args(argv)


def _panel_title(label: str, query: dict, meta: dict) -> str:
    verbs = meta.get('verb_classes') or []
    objects = meta.get('classes') or []
    names = '+'.join(verbs[v] if v < len(verbs) else str(v) for v in query['verbs'])
    obj = objects[query['obj_label']] if query['obj_label'] < len(objects) else query['obj_label']
    return f"{label}: {names} {obj} ({query['score']:.2f})"


def main(argv=None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        if args.topk < 1:
            raise CLIError(f'--topk must be >= 1, got {args.topk}')
        if not osp.isfile(args.image):
            raise CLIError(f'image file not found: {args.image}')
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        import mmcv
        from matplotlib.patches import Rectangle

        from mmvitreg.apis import init_hoi_model
        from mmvitreg.visualization.hoi_attention import (box_attention_share,
                                                          decoder_query_attention,
                                                          triplets_by_query)
        image = mmcv.imread(args.image)
        rows = []
        for label, config, checkpoint in args.model:
            model = init_hoi_model(config, checkpoint, device=args.device)
            attn = decoder_query_attention(model, args.image)
            num_layers = attn.maps.shape[0]
            if not -num_layers <= args.layer < num_layers:
                raise CLIError(f'--layer {args.layer} out of range: {label} has {num_layers} '
                               'decoder layers')
            queries = triplets_by_query(attn.data_sample.pred_hoi, args.topk, args.score_thr)
            rows.append((label, attn, queries, model.dataset_meta))
        if not any(queries for _, _, queries, _ in rows):
            raise CLIError(f'no triplet scores >= {args.score_thr}; lower --score-thr')
        vmax = max(float(attn.maps[args.layer, q['query']].max())
                   for _, attn, queries, _ in rows for q in queries)
        height, width = image.shape[:2]
        cols = max(len(queries) for _, _, queries, _ in rows)
        fig, axes = plt.subplots(len(rows), cols, squeeze=False, layout='constrained',
                                 figsize=(2.6 * cols + 1.0, 2.9 * len(rows)))
        rgb = mmcv.bgr2rgb(image)
        for r, (label, attn, queries, meta) in enumerate(rows):
            xs, ys = attn.cell_centres()
            h, w = attn.maps.shape[-2:]
            # the grid covers the padded input: its extent in original pixels
            extent = (0, w * attn.stride / attn.scale[0], h * attn.stride / attn.scale[1], 0)
            for c in range(cols):
                ax = axes[r][c]
                ax.axis('off')
                if c >= len(queries):
                    continue
                q = queries[c]
                grid = attn.maps[args.layer, q['query']]
                ax.imshow(rgb, extent=(0, width, height, 0), interpolation='nearest')
                im = ax.imshow(grid.numpy(), extent=extent, cmap='jet', alpha=0.5, vmin=0,
                               vmax=vmax, interpolation='bilinear')
                for box, style in ((q['sub_bbox'], '-'), (q['obj_bbox'], '--')):
                    x1, y1, x2, y2 = box
                    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2,
                                           ls=style, edgecolor='white'))
                ax.set_xlim(0, width)
                ax.set_ylim(height, 0)
                share = box_attention_share(grid, xs, ys, [q['sub_bbox'], q['obj_bbox']])
                title = _panel_title(label, q, meta)
                ax.set_title(f"{label}\n{title.split(': ', 1)[1]}\nin boxes {share:.0%}",
                             fontsize=8)
                print(f'{title}  query {q["query"]}  attention in boxes {share:.3f}')
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8,
                     label='cross-attention, ' + ('last decoder layer' if args.layer == -1
                                                  else f'decoder layer {args.layer}'))
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
        print(f'{len(rows)} models, colour scale 0..{vmax:.3f}, written: {args.out}')


if __name__ == '__main__':
    main()
