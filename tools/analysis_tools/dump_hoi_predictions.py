#!/usr/bin/env python
"""Convert HOI predictions dumped by ``tools/test.py --out preds.pkl`` to the JSON of eval_hoi.py.

``tools/test.py CONFIG CKPT --out preds.pkl`` stores one dict per test image whose ``pred_hoi``
holds the top-K triplets (``sub_bboxes``, ``obj_bboxes``, ``obj_labels`` 0..79,
``verb_labels`` 0..116, ``scores``; original image pixels). This tool writes them in the
annotation-style format read by ``tools/analysis_tools/eval_hoi.py`` (and by the PPDM/QPIC-style
offline evaluators): per image ``file_name``, ``predictions`` (boxes with COCO 91-space
``category_id``, person = 1) and ``hoi_prediction`` (``subject_id``/``object_id`` into
``predictions``, verb ``category_id`` 1..117, ``score``). Triplet k uses boxes 2k (subject) and
2k+1 (object).

Example::

    python tools/test.py configs/qpic/qpic_r50_8xb2-150e_hico.py qpic.pth --out preds.pkl
    python tools/analysis_tools/dump_hoi_predictions.py preds.pkl preds.json
    python tools/analysis_tools/eval_hoi.py --ann data/.../test_hico.json --pred preds.json

The pickle is read safely (:func:`mmvitreg.utils.safe_pickle.load_pickle_file`): a received file
cannot run code; ``--trust-file`` unpickles in full.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import CLIError, one_line_errors  # noqa: E402
from mmvitreg.utils.safe_pickle import load_pickle_file  # noqa: E402

FIELDS = ('sub_bboxes', 'obj_bboxes', 'obj_labels', 'verb_labels', 'scores')


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def pred_hoi_to_entry(file_name: str, pred_hoi: Dict) -> Dict:
    """One image's ``pred_hoi`` (dict of arrays/tensors) -> one eval_hoi.py JSON entry."""
    missing = [k for k in FIELDS if k not in pred_hoi]
    if missing:
        raise KeyError(f'pred_hoi of {file_name!r} lacks {missing}; expected {list(FIELDS)}')
    from mmvitreg.datasets.hico_meta import contiguous_to_coco91
    sub = _np(pred_hoi['sub_bboxes']).reshape(-1, 4).astype(float)
    obj = _np(pred_hoi['obj_bboxes']).reshape(-1, 4).astype(float)
    obj_ids = contiguous_to_coco91(_np(pred_hoi['obj_labels']).reshape(-1).astype(np.int64))
    verbs = _np(pred_hoi['verb_labels']).reshape(-1).astype(np.int64)
    scores = _np(pred_hoi['scores']).reshape(-1).astype(float)
    boxes: List[dict] = []
    hois: List[dict] = []
    for k in range(len(scores)):
        boxes.append(dict(bbox=[round(float(v), 2) for v in sub[k]], category_id=1))
        boxes.append(dict(bbox=[round(float(v), 2) for v in obj[k]],
                          category_id=int(obj_ids[k])))
        hois.append(dict(subject_id=2 * k, object_id=2 * k + 1,
                         category_id=int(verbs[k]) + 1, score=float(scores[k])))
    return dict(file_name=file_name, predictions=boxes, hoi_prediction=hois)


def convert(results: List[Dict]) -> List[Dict]:
    """``DumpResults`` records (one dict per image) -> eval_hoi.py entries."""
    entries, seen = [], set()
    for i, res in enumerate(results):
        if 'pred_hoi' not in res:
            raise KeyError(f'record {i} has no pred_hoi: dump a HOI config with '
                           'tools/test.py --out')
        name = res.get('file_name') or osp.basename(res.get('img_path', ''))
        if not name:
            raise KeyError(f'record {i} has neither file_name nor img_path')
        if name in seen:  # DDP samplers may repeat images to even out the ranks
            continue
        seen.add(name)
        entries.append(pred_hoi_to_entry(name, res['pred_hoi']))
    return entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='pred_hoi pickle -> eval_hoi.py JSON')
    parser.add_argument('pkl', help='output of tools/test.py --out')
    parser.add_argument('out', help='JSON file to write')
    parser.add_argument('--trust-file', action='store_true',
                        help='unpickle the file in full (only for files you trust; by default '
                        'only containers, tensors and numeric numpy values are unpickled)')
    args = parser.parse_args(argv)
    with one_line_errors():
        if not osp.isfile(args.pkl):
            raise CLIError(f'prediction pickle not found: {args.pkl}')
        results = load_pickle_file(args.pkl, trusted=args.trust_file or None)
        entries = convert(results)
        with open(args.out, 'w') as f:
            json.dump(entries, f)
        print(f'{len(entries)} images, {sum(len(e["hoi_prediction"]) for e in entries)} '
              f'triplets written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
