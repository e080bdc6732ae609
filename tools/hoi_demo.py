#!/usr/bin/env python
"""Draw the HOI triplets an HOI detector (e.g. QPIC) predicts on one image.

Each of the top ``--topk`` triplets with score >= ``--score-thr`` is drawn as its subject box
(solid), object box (dashed), a line between their centres and a label
``"<verb> <object> <score>"``; the triplets are also printed.

Example::

    python tools/hoi_demo.py demo.jpg configs/qpic/qpic_r50_8xb2-150e_hico.py qpic.pth \
        --out demo_hoi.jpg --topk 10 --score-thr 0.2
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmvitreg.utils.cli import one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='HOI detection demo on one image')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='HOI detector config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', default='hoi_demo.jpg', help='picture to write')
    parser.add_argument('--topk', type=int, default=10, help='most triplets drawn')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='draw triplets with at least this score')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.bbox_head.num_queries=100')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with one_line_errors():
        if args.topk < 1:
            raise ValueError(f'--topk must be >= 1, got {args.topk}')
        if not osp.isfile(args.image):
            raise FileNotFoundError(f'image file not found: {args.image}')
        import mmcv

        from mmvitreg.apis import hoi_triplets, inference_hoi, init_hoi_model
        from mmvitreg.visualization import HOILocalVisualizer
        model = init_hoi_model(args.config, args.checkpoint, device=args.device,
                               cfg_options=args.cfg_options)
        result = inference_hoi(model, args.image)
        visualizer = HOILocalVisualizer(name='hoi_demo', topk=args.topk)
        visualizer.dataset_meta = model.dataset_meta
        image = mmcv.imread(args.image, channel_order='rgb')
        out_dir = osp.dirname(osp.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        visualizer.add_datasample(osp.basename(args.image), image, result,
                                  out_file=args.out, pred_score_thr=args.score_thr)
        triplets = hoi_triplets(result, args.topk, args.score_thr, model.dataset_meta)
        for t in triplets:
            print(f'{t["score"]:.3f}  {t["verb"]} {t["object"]}  subject {t["sub_bbox"]}  '
                  f'object {t["obj_bbox"]}')
        print(f'{len(triplets)} triplets drawn on {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
