"""Hand-computed cases of the HICO-DET evaluation core (official protocol + QPIC mode)."""
import numpy as np
import pytest

from mmvitreg.evaluation.functional.hoi_eval import (HOIDetections, HOIGroundTruth,
                                                     average_precision, evaluate_hoi,
                                                     match_detections, pair_iou, topk_per_image)

BOX_H = [0, 0, 9, 19]      # a 10 x 20 human box (+1 convention)
BOX_O = [20, 0, 29, 9]     # a 10 x 10 object box


def gt(rows, num_images):
    """rows: (img, cls, sub_box, obj_box)."""
    rows = list(rows)
    return HOIGroundTruth(img=[r[0] for r in rows], cls=[r[1] for r in rows],
                          sub=[r[2] for r in rows], obj=[r[3] for r in rows],
                          num_images=num_images)


def dets(rows):
    """rows: (img, cls, sub_box, obj_box, score)."""
    rows = list(rows)
    return HOIDetections(img=[r[0] for r in rows], cls=[r[1] for r in rows],
                         sub=[r[2] for r in rows], obj=[r[3] for r in rows],
                         score=[r[4] for r in rows])


def shift(box, dx=0, dy=0):
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


# ----------------------------------------------------------------------------- IoU
def test_iou_plus_one_exactly_half_is_a_match():
    # +1 areas: 10x10 = 100 inside 10x20 = 200 -> IoU exactly 0.5 (without +1: 81/171 < 0.5)
    assert pair_iou([[0, 0, 9, 9]], [[0, 0, 9, 19]])[0] == 0.5
    g = gt([(0, 0, BOX_H, BOX_O)], 1)
    d = dets([(0, 0, [0, 0, 9, 9], BOX_O, 0.9)])
    assert match_detections(d, g).tolist() == [True]
    # one pixel less of overlap: 90 / 200 < 0.5 -> FP
    d = dets([(0, 0, [0, 0, 9, 8], BOX_O, 0.9)])
    assert match_detections(d, g).tolist() == [False]


def test_iou_touching_boxes_official_vs_qpic():
    a, b = [[0, 0, 10, 10]], [[10, 0, 20, 10]]  # share the column x = 10
    assert pair_iou(a, b, 'official')[0] == pytest.approx(11 / (121 + 121 - 11))
    assert pair_iou(a, b, 'qpic')[0] == 0.0
    assert pair_iou([[0, 0, 4, 4]], [[6, 6, 9, 9]])[0] == 0.0


def test_iou_bad_mode_message():
    with pytest.raises(ValueError, match="pair_iou mode must be one of"):
        pair_iou(np.zeros((1, 4)), np.zeros((1, 4)), mode='coco')


# ----------------------------------------------------------------------------- matching
def test_duplicate_detection_is_false_positive():
    g = gt([(0, 0, BOX_H, BOX_O)], 1)
    d = dets([(0, 0, BOX_H, BOX_O, 0.8), (0, 0, BOX_H, BOX_O, 0.9)])
    # the higher-scored one (row 1) takes the GT pair, the other is a duplicate
    assert match_detections(d, g).tolist() == [False, True]


def test_below_threshold_on_either_box_is_false_positive():
    g = gt([(0, 0, BOX_H, BOX_O)], 1)
    far_obj = shift(BOX_O, dx=6)  # object IoU 4*10 / (200 - 40) = 0.25
    d = dets([(0, 0, BOX_H, far_obj, 0.9), (0, 0, shift(BOX_H, dy=12), BOX_O, 0.8)])
    assert match_detections(d, g).tolist() == [False, False]


def test_detection_without_gt_of_its_class_in_its_image_is_false_positive():
    g = gt([(0, 0, BOX_H, BOX_O)], 2)
    d = dets([(1, 0, BOX_H, BOX_O, 0.9),   # right class, other image
              (0, 1, BOX_H, BOX_O, 0.8),   # right image, other class
              (0, 0, BOX_H, BOX_O, 0.1)])  # the real match, low score
    assert match_detections(d, g).tolist() == [False, False, True]
    res = evaluate_hoi(g, d, hoi_object=[0, 0], rare=[False, False], known_object=False)
    # class 0: FP (0.9) then TP (0.1): precision 1/2 at recall 1 -> AP 0.5; class 1 has no GT
    # (11 terms p/11 summed in order, as MATLAB does: exact up to rounding)
    assert res.ap.tolist() == pytest.approx([0.5, 0.0])
    # official: the class without GT counts with AP 0
    assert res.summary['mAP'] == pytest.approx(0.25)


def test_best_gt_taken_even_if_already_matched_no_fallback():
    # two GT pairs of the same class; both detections overlap A best -> the second is FP
    # although it also overlaps B above 0.5 (VOCevaldet_bboxpair does not fall back).
    box_b = shift(BOX_H, dx=2)
    g = gt([(0, 0, BOX_H, BOX_O), (0, 0, box_b, BOX_O)], 1)
    d = dets([(0, 0, BOX_H, BOX_O, 0.9), (0, 0, shift(BOX_H, dx=1), BOX_O, 0.8)])
    # det 2 vs A: 9x20/(2*200-180)=0.818, vs B: 0.818 as well -> tie -> first GT (A) -> FP
    assert match_detections(d, g).tolist() == [True, False]
    d = dets([(0, 0, BOX_H, BOX_O, 0.9), (0, 0, shift(BOX_H, dx=2), BOX_O, 0.8)])
    assert match_detections(d, g).tolist() == [True, True]  # det 2 prefers B


def test_near_duplicate_gt_pairs_are_separate_positives():
    g = gt([(0, 0, BOX_H, BOX_O), (0, 0, shift(BOX_H, dx=1), BOX_O)], 1)
    d = dets([(0, 0, BOX_H, BOX_O, 0.9)])
    res = evaluate_hoi(g, d, hoi_object=[0], rare=[False], known_object=False)
    assert res.npos.tolist() == [2]
    assert res.recall.tolist() == [0.5]


# ----------------------------------------------------------------------------- AP
def test_11_point_vs_all_point():
    tp = [True, False, True]  # npos 4: recall .25 .25 .5, precision 1 .5 .667
    assert average_precision(tp, 4, '11point') == pytest.approx(5 / 11)
    assert average_precision(tp, 4, 'allpoint') == pytest.approx((1 + 2 / 3) / 4)


def test_exact_thresholds_vs_qpic_drift():
    tp = [True, True, True]  # recall exactly 3/10
    assert average_precision(tp, 10, '11point') == pytest.approx(4 / 11)  # t = 0, .1, .2, .3
    assert average_precision(tp, 10, '11point_drift') == pytest.approx(3 / 11)  # misses .3
    assert average_precision(tp * 2 + [False] * 4, 10, '11point') == pytest.approx(7 / 11)
    assert average_precision([], 10) == 0.0
    assert average_precision([False, False], 0) == 0.0
    with pytest.raises(ValueError, match='AP method must be one of'):
        average_precision(tp, 3, 'coco')


# ----------------------------------------------------------------------------- settings
def test_known_object_filters_images_without_the_object():
    # classes: 0 = (verb a, object 0), 1 = (verb b, object 0), 2 = (verb c, object 1)
    g = gt([(0, 0, BOX_H, BOX_O),    # image 0: the GT of class 0
            (1, 2, BOX_H, BOX_O),    # image 1: only object 1
            (2, 1, BOX_H, BOX_O)],   # image 2: object 0 with another verb
           3)
    d = dets([(0, 0, BOX_H, BOX_O, 0.5), (1, 0, BOX_H, BOX_O, 0.9), (2, 0, BOX_H, BOX_O, 0.8)])
    res = evaluate_hoi(g, d, hoi_object=[0, 0, 1], rare=[False] * 3)
    assert res.ap[0] == pytest.approx(1 / 3)     # Default: FP, FP, TP
    assert res.ap_ko[0] == pytest.approx(1 / 2)  # KO: image 1 dropped -> FP, TP
    assert res.summary['mAP_ko'] == pytest.approx(0.5 / 3)


def test_rare_non_rare_means_and_classes_without_detections():
    g = gt([(0, 0, BOX_H, BOX_O), (0, 1, BOX_H, BOX_O), (0, 2, BOX_H, BOX_O)], 1)
    d = dets([(0, 0, BOX_H, BOX_O, 0.9), (0, 1, BOX_H, BOX_O, 0.9)])  # class 2 undetected
    res = evaluate_hoi(g, d, hoi_object=[0, 0, 0, 0], rare=[True, False, False, True],
                       known_object=False)
    assert res.ap.tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert res.summary['mAP'] == pytest.approx(0.5)
    assert res.summary['mAP_rare'] == pytest.approx(0.5)
    assert res.summary['mAP_non_rare'] == pytest.approx(0.5)
    ignored = evaluate_hoi(g, d, hoi_object=[0] * 4, rare=[True, False, False, True],
                           known_object=False, classes_without_gt='ignore')
    assert ignored.summary['mAP'] == pytest.approx(2 / 3)
    assert ignored.summary['mAP_rare'] == pytest.approx(1.0)


def test_qpic_mode_keeps_top_100_per_image_and_masks_invalid_combinations():
    g = gt([(0, 0, BOX_H, BOX_O)], 1)
    junk = [(0, 1, shift(BOX_H, 50), BOX_O, 0.9)] * 100
    d = dets(junk + [(0, 0, BOX_H, BOX_O, 0.5)])
    assert evaluate_hoi(g, d, [0, 0], [False] * 2, mode='qpic').ap[0] == 0.0
    assert evaluate_hoi(g, d, [0, 0], [False] * 2, mode='official').ap[0] == pytest.approx(1)
    # invalid (verb, object) rows (cls -1) take part in QPIC's top-100 with score 0 only
    d = dets([(0, -1, BOX_H, BOX_O, 0.99)] * 100 + [(0, 0, BOX_H, BOX_O, 0.5)])
    assert evaluate_hoi(g, d, [0, 0], [False] * 2, mode='qpic').ap[0] == pytest.approx(1.0)
    keep = topk_per_image(dets([(0, 0, BOX_H, BOX_O, s) for s in (0.1, 0.3, 0.2)] +
                               [(1, 0, BOX_H, BOX_O, 0.05)]), 2)
    assert keep.tolist() == [False, True, True, True]


def test_input_validation_messages():
    g = gt([(0, 0, BOX_H, BOX_O)], 1)
    with pytest.raises(ValueError, match="HOI evaluation mode must be one of"):
        evaluate_hoi(g, dets([]), [0], [False], mode='matlab')
    with pytest.raises(ValueError, match=r'detection image indices must be in \[0, 1\)'):
        evaluate_hoi(g, dets([(3, 0, BOX_H, BOX_O, 0.5)]), [0], [False])
    with pytest.raises(ValueError, match='rare must have 1 entries'):
        evaluate_hoi(g, dets([]), [0], [False, True])
    with pytest.raises(ValueError, match=r'GT subject boxes must have shape \(N, 4\)'):
        HOIGroundTruth(img=[0], cls=[0], sub=[[0, 0, 1]], obj=[BOX_O], num_images=1)


@pytest.mark.parametrize('case, message', [
    ('det_nan_score', "detected score nan of image 1 (b.jpg) is not finite"),
    ('det_inf_score', "detected score inf of image 1 (b.jpg) is not finite"),
    ('det_nan_box', "detected object box [20.0, 0.0, nan, 9.0] of image 1 (b.jpg) is not "
                    "finite"),
    ('det_inverted_box', "detected subject box [9.0, 0.0, 0.0, 19.0] of image 1 (b.jpg) is "
                         "inverted (needs x1 <= x2 and y1 <= y2)"),
    ('gt_nan_box', "GT subject box [0.0, nan, 9.0, 19.0] of image 1 (b.jpg) is not finite"),
    ('gt_inverted_box', "GT object box [20.0, 9.0, 29.0, 0.0] of image 1 (b.jpg) is inverted"),
])
def test_non_finite_or_inverted_inputs_name_the_image_and_field(case, message):
    """Before: a NaN score ranked first (mAP 1.00 with a NaN detection), NaN/inverted boxes
    silently never matched (mAP 0.88); now one error naming the image and the field."""
    from mmvitreg.datasets.hico_json import HICOInputError
    good_gt = [(0, 0, BOX_H, BOX_O), (1, 0, BOX_H, BOX_O)]
    good_det = [(0, 0, BOX_H, BOX_O, 0.9), (1, 0, BOX_H, BOX_O, 0.8)]
    bad_sub, bad_obj = [9, 0, 0, 19], [20, 0, float('nan'), 9]
    g_rows, d_rows = list(good_gt), list(good_det)
    if case == 'det_nan_score':
        d_rows[1] = (1, 0, BOX_H, BOX_O, float('nan'))
    elif case == 'det_inf_score':
        d_rows[1] = (1, 0, BOX_H, BOX_O, float('inf'))
    elif case == 'det_nan_box':
        d_rows[1] = (1, 0, BOX_H, bad_obj, 0.8)
    elif case == 'det_inverted_box':
        d_rows[1] = (1, 0, bad_sub, BOX_O, 0.8)
    elif case == 'gt_nan_box':
        g_rows[1] = (1, 0, [0, float('nan'), 9, 19], BOX_O)
    else:
        g_rows[1] = (1, 0, BOX_H, [20, 9, 29, 0])
    assert evaluate_hoi(gt(good_gt, 2), dets(good_det), [0], [False],
                        known_object=False).summary['mAP'] == pytest.approx(1.0)
    for mode in ('official', 'qpic'):
        with pytest.raises(HICOInputError) as exc:
            evaluate_hoi(gt(g_rows, 2), dets(d_rows), [0], [False], mode=mode,
                         image_names=['a.jpg', 'b.jpg'])
        assert isinstance(exc.value, ValueError) and message in str(exc.value)
    with pytest.raises(HICOInputError, match='of image 1 is'):  # without names: the index
        evaluate_hoi(gt(g_rows, 2), dets(d_rows), [0], [False])


# ----------------------------------------------------------------------------- reference
def _reference_voc_bboxpair(d_img, d_sub, d_obj, d_score, gt_by_img, npos):
    """Literal per-detection loop of VOCevaldet_bboxpair.m for one class (exact 11-point)."""
    def iou(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
        ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        return iw * ih / (ua - iw * ih)
    order = sorted(range(len(d_score)), key=lambda i: -d_score[i])  # stable
    used = {k: [False] * len(v) for k, v in gt_by_img.items()}
    tp = []
    for i in order:
        ov_max, j_max = -np.inf, None
        for j, (gs, go) in enumerate(gt_by_img.get(d_img[i], [])):
            ov = min(iou(d_sub[i], gs), iou(d_obj[i], go))
            if ov > ov_max:
                ov_max, j_max = ov, j
        ok = ov_max >= 0.5 and not used[d_img[i]][j_max]
        if ok:
            used[d_img[i]][j_max] = True
        tp.append(ok)
    tp = np.cumsum(tp)
    ap = 0.0
    for k in range(11):
        p = [tp[n] / (n + 1) for n in range(len(tp)) if 10 * tp[n] >= k * npos]
        ap += (max(p) if p else 0.0) / 11
    return ap


def test_matches_a_literal_per_class_loop_on_random_data():
    rng = np.random.default_rng(0)
    n_img, n_cls = 12, 3
    g_rows, d_rows = [], []
    for i in range(n_img):
        for _ in range(rng.integers(0, 4)):
            h = rng.integers(0, 30, 2).tolist()
            o = rng.integers(0, 30, 2).tolist()
            hb, ob = h + [h[0] + 10, h[1] + 15], o + [o[0] + 8, o[1] + 8]
            c = int(rng.integers(0, n_cls))
            g_rows.append((i, c, hb, ob))
            for _ in range(rng.integers(0, 4)):  # jittered detections, some duplicates
                j = rng.integers(-3, 4, 4)
                d_rows.append((i, c, (np.array(hb) + j).tolist(),
                               (np.array(ob) + rng.integers(-3, 4, 4)).tolist(),
                               float(rng.random())))
        for _ in range(2):  # random detections
            d_rows.append((i, int(rng.integers(0, n_cls)), [0, 0, 12, 16], [5, 5, 14, 14],
                           float(rng.random())))
    g, d = gt(g_rows, n_img), dets(d_rows)
    res = evaluate_hoi(g, d, hoi_object=[0, 1, 1], rare=[False, True, False],
                       known_object=False)
    for c in range(n_cls):
        gt_by_img = {}
        for (i, cc, hb, ob) in g_rows:
            if cc == c:
                gt_by_img.setdefault(i, []).append((hb, ob))
        rows = [r for r in d_rows if r[1] == c]
        ref = _reference_voc_bboxpair([r[0] for r in rows], [r[2] for r in rows],
                                      [r[3] for r in rows], [r[4] for r in rows], gt_by_img,
                                      sum(len(v) for v in gt_by_img.values()))
        assert res.ap[c] == pytest.approx(ref, abs=1e-12)
    assert 0 < res.summary['mAP'] < 1
