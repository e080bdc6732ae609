#!/usr/bin/env python
"""Speed of the vectorised HICO-DET evaluation vs a per-detection Python loop in QPIC's style.

Synthetic full-size test set: 9,658 images; the GT pairs of each HOI class are as many as the
class table's test-pair column (33,405 in all), spread over random images; 100 predicted
triplets per image (50 pair "queries" x 2 verbs), part of them jittered copies of the GT and
the rest random. Both evaluators see the same data.

- reference: QPIC's ``HICOEvaluator`` algorithm, re-implemented here as the straightforward
  loops it is (per image: Python IoU matrix of GT boxes x predicted boxes, per prediction a
  loop over the image's GT HOIs; per class: VOC 11-point AP with ``np.arange`` thresholds);
  its triplet look-up uses a set (QPIC scans a list), which only helps the reference.
- fast: :func:`mmvitreg.evaluation.functional.evaluate_hoi` with ``mode='qpic'`` (the mode
  where both must give the same mAP, checked below) and with ``mode='official'``.

Prints absolute times, the speed-up ratio and the mAPs.

Then the offline tool end to end, as a user runs it: the same data is written as
``test_hico.json``-style annotations and an ``eval_hoi.py`` prediction file (100 triplets per
image, boxes rounded to 0.01 px as ``dump_hoi_predictions.py`` writes them);
``tools/analysis_tools/eval_hoi.py`` runs in a fresh process and its wall time is compared with
the time Python's ``json`` module takes just to load the two files (also in a fresh process),
interleaved, median of ``--reps``. The tool must print the mAP computed here in-process.

Usage::

    python benchmarks/bench_hico_eval.py [--num-images 9658] [--seed 0] [--reps 3]
                                         [--skip-reference] [--data-dir DIR]
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmvitreg.datasets.hico_meta import hico_meta  # noqa: E402
from mmvitreg.evaluation.functional.hico_io import dets_from_file  # noqa: E402
from mmvitreg.evaluation.functional.hico_io import (gt_from_file, gt_from_images,  # noqa: E402
                                                    read_hico_file)
from mmvitreg.evaluation.functional.hoi_eval import HOIDetections  # noqa: E402
from mmvitreg.evaluation.functional.hoi_eval import evaluate_hoi  # noqa: E402

NUM_QUERIES, VERBS_PER_QUERY = 50, 2


def make_data(num_images: int, seed: int):
    """Per-image GT (boxes, labels, hois) and predictions (boxes, labels, hois, scores)."""
    meta = hico_meta()
    rng = np.random.default_rng(seed)
    scale = num_images / 9658
    counts = np.maximum(np.round(meta.n_test_pairs * scale).astype(int), 1)
    cls_of_pair = np.repeat(np.arange(600), counts)
    img_of_pair = rng.integers(0, num_images, len(cls_of_pair))
    gts = [dict(boxes=[], labels=[], hois=[]) for _ in range(num_images)]

    def rand_box(w=640, h=480):
        x1, y1 = rng.uniform(0, w - 60), rng.uniform(0, h - 60)
        return [x1, y1, x1 + rng.uniform(30, 300), y1 + rng.uniform(30, 300)]

    for c, i in zip(cls_of_pair, img_of_pair):
        g = gts[i]
        g['boxes'] += [np.round(rand_box()), np.round(rand_box())]
        g['labels'] += [0, int(meta.hoi_object[c])]
        g['hois'].append((len(g['boxes']) - 2, len(g['boxes']) - 1, int(meta.hoi_verb[c])))
    preds = []
    for g in gts:
        boxes, labels, hois, scores = [], [], [], []
        for q in range(NUM_QUERIES):
            if q < len(g['hois']) * 2 and rng.random() < 0.6:  # a jittered GT pair
                s, o, v = g['hois'][q % len(g['hois'])]
                sb = g['boxes'][s] + rng.normal(0, 20, 4)
                ob = g['boxes'][o] + rng.normal(0, 20, 4)
                ol = g['labels'][o]
                verbs = [v, int(rng.integers(0, 117))]
                base = 0.2
            else:
                c = int(rng.integers(0, 600))
                sb, ob, ol = np.array(rand_box()), np.array(rand_box()), int(meta.hoi_object[c])
                verbs = [int(meta.hoi_verb[c]), int(rng.integers(0, 117))]
                base = 0.0
            boxes += [sb, ob]
            labels += [0, ol]
            for v in verbs[:VERBS_PER_QUERY]:
                hois.append((len(boxes) - 2, len(boxes) - 1, v))
                scores.append(base + 0.5 * rng.random())
        preds.append(dict(boxes=np.array(boxes), labels=np.array(labels),
                          hois=np.array(hois), scores=np.array(scores)))
    return gts, preds


# ------------------------------------------------------------------ QPIC-style reference
class LoopEvaluator:
    """Per-detection Python loops with QPIC's rules (top-100, +1 IoU with empty-overlap test,
    ``np.arange`` 11-point thresholds, mean over classes with GT)."""

    def __init__(self, gts, preds, valid, max_hois=100):
        self.valid = valid  # (117, 80) verb-object validity (QPIC's correct_mat)
        self.tp, self.fp = defaultdict(list), defaultdict(list)
        self.score = defaultdict(list)
        self.sum_gts = defaultdict(int)
        self.gts, self.preds = [], []
        for g in gts:
            boxes = [dict(bbox=b, category_id=lab) for b, lab in zip(g['boxes'], g['labels'])]
            hois = [dict(subject_id=s, object_id=o, category_id=v) for s, o, v in g['hois']]
            self.gts.append(dict(annotations=boxes, hoi_annotation=hois))
            for h in hois:
                self.sum_gts[(boxes[h['subject_id']]['category_id'],
                              boxes[h['object_id']]['category_id'], h['category_id'])] += 1
        self.gt_triplets = set(self.sum_gts)
        for p in preds:
            boxes = [dict(bbox=b, category_id=int(lab)) for b, lab in zip(p['boxes'], p['labels'])]
            hois = []
            for (s, o, v), sc in zip(p['hois'].tolist(), p['scores'].tolist()):
                sc = sc * float(self.valid[v, boxes[o]['category_id']])
                hois.append(dict(subject_id=s, object_id=o, category_id=v, score=sc))
            hois.sort(key=lambda h: h['score'], reverse=True)
            self.preds.append(dict(predictions=boxes, hoi_prediction=hois[:max_hois]))

    @staticmethod
    def iou(b1, b2):
        if b1['category_id'] != b2['category_id']:
            return 0.0
        r1, r2 = b1['bbox'], b2['bbox']
        s1 = (r1[2] - r1[0] + 1) * (r1[3] - r1[1] + 1)
        s2 = (r2[2] - r2[0] + 1) * (r2[3] - r2[1] + 1)
        top, bottom = max(r1[1], r2[1]), min(r1[3], r2[3])
        left, right = max(r1[0], r2[0]), min(r1[2], r2[2])
        if top >= bottom or left >= right:
            return 0.0
        inter = (bottom - top + 1) * (right - left + 1)
        return inter / (s1 + s2 - inter)

    def iou_mat(self, gt_boxes, pred_boxes):
        matches, overlaps = {}, {}
        for i, gb in enumerate(gt_boxes):
            for j, pb in enumerate(pred_boxes):
                ov = self.iou(gb, pb)
                if ov >= 0.5:
                    matches.setdefault(j, []).append(i)
                    overlaps.setdefault(j, []).append(ov)
        return matches, overlaps

    def evaluate(self):
        for p, g in zip(self.preds, self.gts):
            pboxes, gboxes = p['predictions'], g['annotations']
            ghois = g['hoi_annotation']
            matches, overlaps = self.iou_mat(gboxes, pboxes) if gboxes else ({}, {})
            used = [False] * len(ghois)
            for h in sorted(p['hoi_prediction'], key=lambda k: k['score'], reverse=True):
                best, best_k = 0.0, None
                if h['subject_id'] in matches and h['object_id'] in matches:
                    sids, oids = matches[h['subject_id']], matches[h['object_id']]
                    sov, oov = overlaps[h['subject_id']], overlaps[h['object_id']]
                    for k, gh in enumerate(ghois):
                        if gh['subject_id'] in sids and gh['object_id'] in oids and \
                                gh['category_id'] == h['category_id']:
                            ov = min(sov[sids.index(gh['subject_id'])],
                                     oov[oids.index(gh['object_id'])])
                            if ov > best:
                                best, best_k = ov, k
                triplet = (pboxes[h['subject_id']]['category_id'],
                           pboxes[h['object_id']]['category_id'], h['category_id'])
                if triplet not in self.gt_triplets:
                    continue
                hit = best_k is not None and not used[best_k]
                if hit:
                    used[best_k] = True
                self.tp[triplet].append(int(hit))
                self.fp[triplet].append(int(not hit))
                self.score[triplet].append(h['score'])
        aps = {}
        for triplet, npos in self.sum_gts.items():
            if not self.tp[triplet]:
                aps[triplet] = 0.0
                continue
            order = np.argsort(-np.array(self.score[triplet]), kind='stable')
            tp = np.cumsum(np.array(self.tp[triplet])[order])
            fp = np.cumsum(np.array(self.fp[triplet])[order])
            rec, prec = tp / npos, tp / (tp + fp)
            ap = 0.0
            for t in np.arange(0., 1.1, 0.1):
                ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) else 0.0) / 11.
            aps[triplet] = ap
        return aps


def flatten(gts, preds):
    """Per-image GT and predictions -> flat arrays (vectorised over images: one concatenate
    per field, box indices shifted by each image's box offset)."""
    meta = hico_meta()
    gt, _ = gt_from_images([dict(bboxes=g['boxes'], labels=g['labels'], hois=g['hois'])
                            for g in gts])
    n_box = np.array([len(p['boxes']) for p in preds])
    n_hoi = np.array([len(p['scores']) for p in preds])
    boxes = np.concatenate([p['boxes'] for p in preds])
    labels = np.concatenate([p['labels'] for p in preds])
    hois = np.concatenate([p['hois'] for p in preds])
    offset = np.repeat(np.cumsum(n_box) - n_box, n_hoi)
    sub, obj = hois[:, 0] + offset, hois[:, 1] + offset
    dets = HOIDetections(img=np.repeat(np.arange(len(preds)), n_hoi),
                         cls=meta.hoi_class(hois[:, 2], labels[obj]), sub=boxes[sub],
                         obj=boxes[obj], score=np.concatenate([p['scores'] for p in preds]))
    return gt, dets


def write_files(gts, preds, out_dir: str):
    """The synthetic set as an annotation file and an eval_hoi.py prediction file."""
    meta = hico_meta()
    coco = meta.coco91_ids.tolist()
    ann, pred = [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        name = f'HICO_test2015_{i + 1:08d}.jpg'
        ann.append(dict(
            file_name=name,
            annotations=[dict(bbox=np.asarray(b, float).tolist(), category_id=coco[lab])
                         for b, lab in zip(g['boxes'], g['labels'])],
            hoi_annotation=[dict(subject_id=s, object_id=o, category_id=v + 1)
                            for s, o, v in g['hois']]))
        boxes = np.round(p['boxes'], 2).tolist()
        pred.append(dict(
            file_name=name,
            predictions=[dict(bbox=b, category_id=coco[lab])
                         for b, lab in zip(boxes, p['labels'].tolist())],
            hoi_prediction=[dict(subject_id=s, object_id=o, category_id=v + 1, score=sc)
                            for (s, o, v), sc in zip(p['hois'].tolist(),
                                                     p['scores'].tolist())]))
    paths = osp.join(out_dir, 'test_hico.json'), osp.join(out_dir, 'preds.json')
    for path, data in zip(paths, (ann, pred)):
        with open(path, 'w') as f:
            json.dump(data, f)
    return paths


JSON_LOAD = ('import json, sys, time\n'
             't = time.perf_counter()\n'
             'for path in sys.argv[1:]:\n'
             '    with open(path) as f:\n'
             '        json.load(f)\n'
             'print(time.perf_counter() - t)\n')


def bench_tool(ann: str, pred: str, reps: int, expected_map: float) -> bool:
    """Median wall time of eval_hoi.py vs json.load of its two inputs (fresh processes)."""
    tool = osp.join(REPO, 'tools', 'analysis_tools', 'eval_hoi.py')
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    t_json, t_tool, out = [], [], ''
    for _ in range(reps):
        res = subprocess.run([sys.executable, '-c', JSON_LOAD, ann, pred], env=env,
                             capture_output=True, text=True, check=True)
        t_json.append(float(res.stdout))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, tool, '--ann', ann, '--pred', pred], env=env,
                             capture_output=True, text=True)
        t_tool.append(time.perf_counter() - t0)
        if res.returncode:
            print(res.stdout + res.stderr)
            return False
        out = res.stdout
    j, t = float(np.median(t_json)), float(np.median(t_tool))
    size = (osp.getsize(ann) + osp.getsize(pred)) / 2 ** 20
    print(f'offline tool (fresh processes, median of {reps}; files {size:.0f} MB):')
    print(f'  json.load of both files:          {j:8.2f} s   (runs: '
          f'{", ".join(f"{x:.2f}" for x in t_json)})')
    print(f'  eval_hoi.py end to end:           {t:8.2f} s   (runs: '
          f'{", ".join(f"{x:.2f}" for x in t_tool)})')
    print(f'  ratio eval_hoi.py / json.load:    {t / j:8.2f}x   (target <= 1.5x)')
    found = re.search(r'^Default\s+([\d.]+)', out, re.M)
    same = found is not None and found.group(1) == f'{100 * expected_map:.2f}'
    print(f'  tool mAP {found.group(1) if found else "?"} vs in-process '
          f'{100 * expected_map:.2f}:', 'same' if same else 'DIFFERENT')
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, default=9658)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--reps', type=int, default=3,
                        help='interleaved runs of the offline-tool comparison')
    parser.add_argument('--skip-reference', action='store_true',
                        help='skip the QPIC-style loop (~20 s)')
    parser.add_argument('--data-dir',
                        help='write (and keep) the JSON files here; default: a temp folder')
    args = parser.parse_args()
    meta = hico_meta()
    t0 = time.perf_counter()
    gts, preds = make_data(args.num_images, args.seed)
    n_gt = sum(len(g['hois']) for g in gts)
    n_det = sum(len(p['scores']) for p in preds)
    print(f'synthetic test set: {len(gts)} images, {n_gt} GT pairs, {n_det} predicted '
          f'triplets (made in {time.perf_counter() - t0:.1f} s)')

    t0 = time.perf_counter()
    gt, dets = flatten(gts, preds)
    fast_qpic = evaluate_hoi(gt, dets, meta.hoi_object, meta.rare, mode='qpic')
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    gt, dets = flatten(gts, preds)
    fast_off = evaluate_hoi(gt, dets, meta.hoi_object, meta.rare, mode='official')
    t_off = time.perf_counter() - t0

    print(f"fast, mode='qpic' (incl. inputs):  {t_fast:8.2f} s   mAP "
          f"{100 * fast_qpic.summary['mAP']:.4f}")
    print(f"fast, mode='official':             {t_off:8.2f} s   mAP "
          f"{100 * fast_off.summary['mAP']:.4f} (KO {100 * fast_off.summary['mAP_ko']:.4f})")
    ok = True
    if not args.skip_reference:
        t0 = time.perf_counter()
        valid = meta.hoi_lookup >= 0
        ref = LoopEvaluator(gts, preds, valid)
        ref_aps = ref.evaluate()
        t_ref = time.perf_counter() - t0
        ref_ap = np.zeros(600)
        for (_, obj, verb), ap in ref_aps.items():
            ref_ap[meta.hoi_lookup[verb, obj]] = ap
        has_gt = fast_qpic.npos > 0
        ref_map = float(ref_ap[has_gt].mean())
        max_diff = float(np.abs(ref_ap - fast_qpic.ap).max())
        print(f'reference (QPIC-style loops):     {t_ref:8.2f} s   mAP {100 * ref_map:.4f}   '
              f'max |AP diff| vs fast qpic {max_diff:.2e}')
        print(f'speed-up (reference / fast qpic): {t_ref / t_fast:.1f}x')
        ok = max_diff < 1e-9
        print('same mAP in qpic mode:', 'yes' if ok else 'NO')

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.data_dir or tmp
        os.makedirs(out_dir, exist_ok=True)
        t0 = time.perf_counter()
        ann, pred = write_files(gts, preds, out_dir)
        print(f'wrote {ann} and {pred} ({time.perf_counter() - t0:.1f} s)')
        # the tool reads boxes rounded to 0.01 px: its expected mAP is computed from the files
        gt_f, _, names = gt_from_file(read_hico_file(ann))
        dets_f = dets_from_file(read_hico_file(pred, prediction=True), names)
        expected = evaluate_hoi(gt_f, dets_f, meta.hoi_object, meta.rare).summary['mAP']
        ok = bench_tool(ann, pred, args.reps, expected) and ok
    if not ok:
        sys.exit(1)


if __name__ == '__main__':
    main()
