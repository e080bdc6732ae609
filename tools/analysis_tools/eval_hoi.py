#!/usr/bin/env python
"""Evaluate saved HICO-DET predictions offline (official protocol, or QPIC's with --mode qpic).

The prediction file is a JSON list in the style of the annotations, one entry per image::

    [{"file_name": "HICO_test2015_00000001.jpg",
      "predictions": [{"bbox": [x1, y1, x2, y2], "category_id": 1}, ...],   # COCO 91-space ids
      "hoi_prediction": [{"subject_id": 0, "object_id": 1, "category_id": 37,  # verb 1..117
                          "score": 0.83}, ...]}, ...]

(``annotations`` is accepted instead of ``predictions``.) Boxes are in original image pixels.
Images of the annotation file without an entry have no detections.

Example::

    python tools/analysis_tools/eval_hoi.py \
        --ann data/hico_20160224_det/annotations/test_hico.json \
        --pred results/preds.json --per-class-out results/per_class_ap.csv
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate saved HICO-DET predictions')
    parser.add_argument('--ann', required=True, help='test_hico.json')
    parser.add_argument('--pred', required=True, help='prediction JSON (see the docstring)')
    parser.add_argument('--mode', choices=['official', 'qpic'], default='official',
                        help='official MATLAB protocol (default) or QPIC compatibility')
    parser.add_argument('--ap-method', choices=['11point', '11point_drift', 'allpoint'],
                        help='AP interpolation (default: 11point, or 11point_drift for qpic)')
    parser.add_argument('--max-per-image', type=int,
                        help='keep the top-k triplets per image (qpic default: 100)')
    parser.add_argument('--classes-without-gt', choices=['zero', 'ignore'],
                        help='classes without GT in the annotation: AP 0 and counted (official '
                             'default) or left out of the means (qpic default)')
    parser.add_argument('--per-class-out', help='write per-class AP to this CSV file')
    return parser.parse_args(argv)


def load_predictions(pred_path: str, ann_names: dict) -> list:
    """Per-annotation-image triplet dicts (sub, obj, cls, score) from a prediction file."""
    import numpy as np
    from mmvitreg.datasets.hico_det import load_hico_json, parse_hico_entry
    from mmvitreg.datasets.hico_meta import hico_meta
    meta = hico_meta()
    preds = [dict(sub=np.zeros((0, 4)), obj=np.zeros((0, 4)), cls=np.zeros(0, np.int64),
                  score=np.zeros(0)) for _ in ann_names]
    seen = {}
    for idx, entry in enumerate(load_hico_json(pred_path, what='prediction file')):
        item = parse_hico_entry(entry, idx, pred_path, prediction=True)
        name = item['file_name']
        if name not in ann_names:
            raise ValueError(f'{pred_path} entry {idx} is for image {name!r}, which is not in '
                             'the annotation file')
        if name in seen:
            raise ValueError(f'{pred_path} entries {seen[name]} and {idx} are both for image '
                             f'{name!r}')
        seen[name] = idx
        hois = item['hois']
        preds[ann_names[name]] = dict(
            sub=item['bboxes'][hois[:, 0]], obj=item['bboxes'][hois[:, 1]],
            cls=meta.hoi_class(hois[:, 2], item['labels'][hois[:, 1]]), score=item['scores'])
    return preds


def main(argv=None) -> int:
    args = parse_args(argv)
    with one_line_errors():
        from mmvitreg.datasets.hico_det import load_hico_json, parse_hico_entry
        from mmvitreg.datasets.hico_meta import hico_meta
        from mmvitreg.evaluation.functional.hoi_eval import evaluate_hoi
        from mmvitreg.evaluation.metrics.hico_metric import (dets_from_triplets,
                                                             format_summary, gt_from_images,
                                                             write_per_class_ap)
        if args.max_per_image is not None and args.max_per_image < 1:
            raise ValueError(f'--max-per-image must be >= 1, got {args.max_per_image}')
        gts, names = [], {}
        for idx, entry in enumerate(load_hico_json(args.ann)):
            item = parse_hico_entry(entry, idx, args.ann)
            if item['file_name'] in names:
                raise ValueError(f'{args.ann} entry {idx} repeats image {item["file_name"]!r}')
            names[item['file_name']] = len(gts)
            gts.append(item)
        preds = load_predictions(args.pred, names)
        gt, invalid = gt_from_images(gts)
        meta = hico_meta()
        result = evaluate_hoi(gt, dets_from_triplets(preds), meta.hoi_object, meta.rare,
                              mode=args.mode, ap_method=args.ap_method,
                              max_per_image=args.max_per_image,
                              classes_without_gt=args.classes_without_gt)
        n_dets = sum(len(p['score']) for p in preds)
        print(f'{len(gts)} images, {len(gt.cls)} GT pairs of {int((result.npos > 0).sum())} '
              f'classes, {n_dets} predicted triplets, mode={args.mode}')
        if invalid:
            print(f'note: {invalid} GT HOIs are none of the 600 classes and were left out')
        print(format_summary(result.summary, f'HICO-DET ({args.mode})'))
        if args.per_class_out:
            write_per_class_ap(args.per_class_out, result)
            print(f'per-class AP written to {args.per_class_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
