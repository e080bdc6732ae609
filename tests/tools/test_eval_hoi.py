"""tools/analysis_tools/eval_hoi.py: offline evaluation of saved HICO-DET predictions."""
import csv
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest

from mmvitreg.testing import make_hico_dataset

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'eval_hoi', osp.join(REPO, 'tools/analysis_tools/eval_hoi.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('hico')
    info = make_hico_dataset(str(root), num_train=0, num_test=4, pairs_per_image=(1, 3),
                             duplicate_prob=0.5, write_images=False, seed=5)
    ann = json.load(open(info['test_ann']))
    preds = [dict(file_name=e['file_name'], predictions=e['annotations'],
                  hoi_prediction=[dict(h, score=1.0 - 0.01 * k)
                                  for k, h in enumerate(e['hoi_annotation'])])
             for e in ann[1:]]  # image 0 has no predictions at all
    pred_path = root / 'pred.json'
    pred_path.write_text(json.dumps(preds))
    return root, info['test_ann'], str(pred_path), preds


def run(capsys, *argv):
    code = load_tool().main(list(argv))
    return code, capsys.readouterr()


def test_prints_both_settings_and_per_class_file(files, capsys):
    root, ann, pred, _ = files
    out_csv = str(root / 'per_class.csv')
    code, out = run(capsys, '--ann', ann, '--pred', pred, '--per-class-out', out_csv,
                    '--classes-without-gt', 'ignore')
    assert code == 0
    assert 'Default' in out.out and 'Known Object' in out.out and 'Non-rare' in out.out
    assert 'Default            100.00' not in out.out  # image 0 was not predicted
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 600
    assert any(float(r['recall']) < 1 for r in rows if int(r['n_gt']) > 0)
    code, out = run(capsys, '--ann', ann, '--pred', pred, '--mode', 'qpic')
    assert code == 0 and 'HICO-DET (qpic)' in out.out


def test_errors_are_one_line(files, capsys, tmp_path):
    _, ann, pred, preds = files
    with pytest.raises(SystemExit) as exc:
        run(capsys, '--ann', ann, '--pred', str(tmp_path / 'none.json'))
    assert exc.value.code == 1
    assert 'error: FileNotFoundError: prediction file not found' in capsys.readouterr().err
    stray = [dict(preds[0], file_name='HICO_test2015_00009999.jpg')]
    path = tmp_path / 'stray.json'
    path.write_text(json.dumps(stray))
    with pytest.raises(SystemExit):
        run(capsys, '--ann', ann, '--pred', str(path))
    err = capsys.readouterr().err
    assert "stray.json entry 0 is for image 'HICO_test2015_00009999.jpg', which is not in " \
           'the annotation file' in err
    assert len(err.strip().splitlines()) == 1
    no_score = [dict(preds[0], hoi_prediction=[{k: v for k, v in h.items() if k != 'score'}
                                               for h in preds[0]['hoi_prediction']])]
    path.write_text(json.dumps(no_score))
    with pytest.raises(SystemExit):
        run(capsys, '--ann', ann, '--pred', str(path))
    assert 'hoi_prediction[0] has no "score"' in capsys.readouterr().err


def test_wrong_hoi_key_is_a_one_line_error(files, capsys, tmp_path):
    _, ann, _, preds = files
    wrong = [dict(file_name=p['file_name'], predictions=p['predictions'],
                  hoi_annotation=p['hoi_prediction']) for p in preds]
    path = tmp_path / 'wrong_key.json'
    path.write_text(json.dumps(wrong))
    with pytest.raises(SystemExit) as exc:
        run(capsys, '--ann', ann, '--pred', str(path))
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith('error: ValueError: ') and 'has no "hoi_prediction" list' in err


def test_fresh_process_imports_no_toolbox_and_matches_the_metric(files):
    """The user's case: a fresh interpreter runs the tool; it must not import torch, mmdet,
    mmpretrain or mmengine, and must print what the in-package evaluation computes."""
    import subprocess
    import sys

    from mmvitreg.datasets.hico_det import load_hico_json, parse_hico_entry
    from mmvitreg.datasets.hico_meta import hico_meta
    from mmvitreg.evaluation.functional import evaluate_hoi
    from mmvitreg.evaluation.metrics.hico_metric import (dets_from_triplets, format_summary,
                                                         gt_from_images)
    _, ann, pred, _ = files
    probe = ('import runpy, sys\n'
             f'sys.argv = ["eval_hoi.py", "--ann", {ann!r}, "--pred", {pred!r}]\n'
             'try:\n'
             f'    runpy.run_path({osp.join(REPO, "tools/analysis_tools/eval_hoi.py")!r}, '
             'run_name="__main__")\n'
             'except SystemExit as exc:\n'
             '    assert not exc.code, exc.code\n'
             'heavy = [m for m in ("torch", "mmdet", "mmpretrain", "mmengine", "mmcv") '
             'if m in sys.modules]\n'
             'print("HEAVY", heavy)\n')
    res = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'HEAVY []' in res.stdout
    # reference: the per-entry parser + in-package metric helpers
    meta = hico_meta()
    gts = [parse_hico_entry(e, i, ann) for i, e in enumerate(load_hico_json(ann))]
    index = {g['file_name']: i for i, g in enumerate(gts)}
    dets = [dict(sub=np.zeros((0, 4)), obj=np.zeros((0, 4)), cls=np.zeros(0, int),
                 score=np.zeros(0)) for _ in gts]
    for i, e in enumerate(load_hico_json(pred)):
        p = parse_hico_entry(e, i, pred, prediction=True)
        h = p['hois']
        dets[index[p['file_name']]] = dict(sub=p['bboxes'][h[:, 0]], obj=p['bboxes'][h[:, 1]],
                                           cls=meta.hoi_class(h[:, 2], p['labels'][h[:, 1]]),
                                           score=p['scores'])
    result = evaluate_hoi(gt_from_images(gts)[0], dets_from_triplets(dets), meta.hoi_object,
                          meta.rare)
    assert format_summary(result.summary, 'HICO-DET (official)') in res.stdout


def _first_with_pairs(entries):
    return next(i for i, e in enumerate(entries)
                if e.get('hoi_prediction', e.get('hoi_annotation')))


def _bad(kind, entry, box_key, hoi_key):
    box = entry[box_key][0]['bbox']
    if kind == 'nan-score':
        entry[hoi_key][0]['score'] = float('nan')
    elif kind == 'inf-score':
        entry[hoi_key][0]['score'] = float('inf')
    elif kind == 'nan-box':
        box[0] = float('nan')
    elif kind == 'inverted-box':
        box[1], box[3] = box[3] + 1, box[1]
    elif kind == 'huge-category':
        entry[box_key][0]['category_id'] = 10**30
    elif kind == 'huge-verb':
        entry[hoi_key][0]['category_id'] = 10**30


EXPECTED = {
    'nan-score': 'hoi_prediction[0] score must be a finite number, got nan',
    'inf-score': 'hoi_prediction[0] score must be a finite number, got inf',
    'nan-box': '[0] bbox must be a finite number, got nan',
    'inverted-box': 'is inverted (needs x1 <= x2 and y1 <= y2)',
    'huge-category': f'[0] has unknown object category_id {10**30}',
    'huge-verb': f'[0] has verb category_id {10**30} outside 1..117',
}
CASES = [(k, True) for k in EXPECTED] + [(k, False) for k in EXPECTED if 'score' not in k]


@pytest.mark.parametrize('kind, in_pred', CASES,
                         ids=[f'{k}-{"pred" if p else "gt"}' for k, p in CASES])
def test_bad_numbers_and_ids_are_one_line_errors_naming_image_and_field(
        files, capsys, tmp_path, kind, in_pred):
    """Before: NaN/Inf scores printed mAP 100.00, NaN or inverted boxes 88.xx, a huge
    category_id an OverflowError traceback."""
    _, ann, pred, preds = files
    entries = json.loads(json.dumps(preds if in_pred else json.load(open(ann))))
    idx = _first_with_pairs(entries)
    entry = entries[idx]
    box_key = 'predictions' if in_pred else 'annotations'
    _bad(kind, entry, box_key, 'hoi_prediction' if in_pred else 'hoi_annotation')
    path = tmp_path / ('pred.json' if in_pred else 'ann.json')
    path.write_text(json.dumps(entries))
    argv = ['--ann', ann, '--pred', str(path)] if in_pred else ['--ann', str(path), '--pred', pred]
    with pytest.raises(SystemExit) as exc:
        run(capsys, *argv)
    assert exc.value.code == 1
    out = capsys.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and 'mAP' not in out.out
    assert err.startswith('error: HICOInputError: ')
    assert f'{path} entry {idx} ({entry["file_name"]}): ' in err and EXPECTED[kind] in err, err
