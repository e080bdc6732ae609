#!/usr/bin/env python
"""Evaluate saved HICO-DET predictions offline (official protocol, or QPIC's with --mode qpic).

The prediction file is a JSON list in the style of the annotations, one entry per image::

    [{"file_name": "HICO_test2015_00000001.jpg",
      "predictions": [{"bbox": [x1, y1, x2, y2], "category_id": 1}, ...],   # COCO 91-space ids
      "hoi_prediction": [{"subject_id": 0, "object_id": 1, "category_id": 37,  # verb 1..117
                          "score": 0.83}, ...]}, ...]

(``annotations`` is accepted instead of ``predictions``; ``hoi_prediction`` is required, an
entry with ``hoi_annotation`` instead is an error.) Boxes are in original image pixels.
Images of the annotation file without an entry have no detections.
``tools/analysis_tools/dump_hoi_predictions.py`` writes this file from ``tools/test.py --out``.

Example::

    python tools/analysis_tools/eval_hoi.py \
        --ann data/hico_20160224_det/annotations/test_hico.json \
        --pred results/preds.json --per-class-out results/per_class_ap.csv

Only ``numpy`` and the package's pure evaluation modules are imported (not mmdet/mmpretrain/
torch), so the tool costs little more than reading its two JSON files.
"""
import argparse
import os
import os.path as osp
import sys
import types
from contextlib import contextmanager
from typing import Iterator

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

DEBUG_ENV = 'MMVITREG_DEBUG'
# Packages whose __init__ is skipped: the modules used here import only numpy and each other.
_LIGHT_PACKAGES = ('mmvitreg', 'mmvitreg.datasets', 'mmvitreg.evaluation',
                   'mmvitreg.evaluation.functional')


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


def import_light():
    """The package's ``hico_io`` and ``hoi_eval`` modules, without ``import mmvitreg``.

    ``mmvitreg/__init__.py`` imports mmdet, mmpretrain and torch to register its types (several
    seconds). When mmvitreg is not imported yet, its packages are entered as bare namespace
    modules just long enough to import the pure modules, then removed again, so that a later
    ``import mmvitreg`` in the same process is the normal one.
    """
    import importlib
    if 'mmvitreg' in sys.modules:
        return (importlib.import_module('mmvitreg.evaluation.functional.hico_io'),
                importlib.import_module('mmvitreg.evaluation.functional.hoi_eval'))
    before = set(sys.modules)
    for name in _LIGHT_PACKAGES:
        module = types.ModuleType(name)
        module.__path__ = [osp.join(REPO, *name.split('.'))]
        sys.modules[name] = module
    try:
        hico_io = importlib.import_module('mmvitreg.evaluation.functional.hico_io')
        hoi_eval = importlib.import_module('mmvitreg.evaluation.functional.hoi_eval')
    finally:
        for name in set(sys.modules) - before:
            if name == 'mmvitreg' or name.startswith('mmvitreg.'):
                del sys.modules[name]
    return hico_io, hoi_eval


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Bad input -> ``error: <Type>: <message>`` on stderr and exit status 1 (as the other
    tools; ``MMVITREG_DEBUG=1`` shows the traceback). Kept here so that no toolbox is imported.
    """
    try:
        yield
    except (FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        first = str(msg).splitlines()[0] if str(msg) else ''
        print(f'error: {type(exc).__name__}: {first}  [{DEBUG_ENV}=1 shows the traceback]',
              file=sys.stderr)
        sys.exit(1)


def main(argv=None) -> int:
    args = parse_args(argv)
    with one_line_errors():
        if args.max_per_image is not None and args.max_per_image < 1:
            raise ValueError(f'--max-per-image must be >= 1, got {args.max_per_image}')
        hico_io, hoi_eval = import_light()
        ann = hico_io.read_hico_file(args.ann)
        gt, invalid, names = hico_io.gt_from_file(ann)
        del ann
        pred = hico_io.read_hico_file(args.pred, prediction=True)
        dets = hico_io.dets_from_file(pred, names)
        del pred
        meta = hico_io.hico_meta()
        result = hoi_eval.evaluate_hoi(gt, dets, meta.hoi_object, meta.rare, mode=args.mode,
                                       ap_method=args.ap_method,
                                       max_per_image=args.max_per_image,
                                       classes_without_gt=args.classes_without_gt,
                                       image_names=list(names))
        print(f'{gt.num_images} images, {len(gt.cls)} GT pairs of '
              f'{int((result.npos > 0).sum())} classes, {len(dets.score)} predicted triplets, '
              f'mode={args.mode}')
        if invalid:
            print(f'note: {invalid} GT HOIs are none of the 600 classes and were left out')
        print(hico_io.format_summary(result.summary, f'HICO-DET ({args.mode})'))
        if args.per_class_out:
            hico_io.write_per_class_ap(args.per_class_out, result)
            print(f'per-class AP written to {args.per_class_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
