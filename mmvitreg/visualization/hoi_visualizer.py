"""Pictures of HOI predictions: top-K (subject, object, verb) triplets on the image."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.visualization import DetLocalVisualizer

from mmvitreg.datasets.hico_meta import hico_meta
from mmvitreg.registry import VISUALIZERS

__all__ = ['HOILocalVisualizer', 'select_triplets']

# well-separated RGB colours (matplotlib's tab10), one per drawn (subject, object) pair
PAIR_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
FIELDS = ('sub_bboxes', 'obj_bboxes', 'obj_labels', 'verb_labels', 'scores')


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def select_triplets(pred_hoi, topk: int = 10, score_thr: float = 0.0) -> Dict[str, np.ndarray]:
    """The ``topk`` highest-scoring triplets of ``pred_hoi`` with score >= ``score_thr``.

    ``pred_hoi``: ``InstanceData`` or dict with ``sub_bboxes`` (K, 4), ``obj_bboxes`` (K, 4),
    ``obj_labels`` (K,) 0..79, ``verb_labels`` (K,) 0..116 and ``scores`` (K,) (the HOI data
    contract, docs/DESIGN.md). Returns numpy arrays under the same keys, by decreasing score.
    """
    if topk < 1:
        raise ValueError(f'topk must be >= 1, got {topk}')
    get = pred_hoi.get if isinstance(pred_hoi, dict) else (lambda k: getattr(pred_hoi, k, None))
    missing = [k for k in FIELDS if get(k) is None]
    if missing:
        raise KeyError(f'pred_hoi lacks {missing}; an HOI prediction needs {list(FIELDS)}')
    out = {k: _np(get(k)).reshape(-1).astype(np.int64) for k in ('obj_labels', 'verb_labels')}
    out.update({k: _np(get(k)).reshape(-1, 4).astype(np.float64)
                for k in ('sub_bboxes', 'obj_bboxes')})
    out['scores'] = _np(get('scores')).reshape(-1).astype(np.float64)
    order = np.argsort(-out['scores'], kind='stable')
    order = order[out['scores'][order] >= score_thr][:topk]
    return {k: v[order] for k, v in out.items()}


@VISUALIZERS.register_module()
class HOILocalVisualizer(DetLocalVisualizer):
    """mmdet's ``DetLocalVisualizer`` that draws HOI triplets (``data_sample.pred_hoi``).

    For each of the top ``topk`` triplets (score >= the threshold): the subject box (solid),
    the object box (dashed), a line between their centres and a label
    ``"<verb> <object> <score>"``; triplets on the same pair of boxes share one colour and one
    label block. Verb and object names come from ``dataset_meta`` (``verb_classes``,
    ``classes``) and default to the HICO-DET tables. Samples without ``pred_hoi`` are drawn as
    mmdet draws them. Used by ``tools/hoi_demo.py`` and by ``tools/test.py --show-dir``.

    Args:
        topk: most triplets drawn per image.
        line_width: box/line width in pixels at a 640-pixel image side (scaled with the image).
        font_size: label size in points at a 640-pixel image side (scaled, at least 6).
        **kwargs: passed to ``DetLocalVisualizer`` (``name``, ``vis_backends``, ``save_dir``).
    """

    def __init__(self, name: str = 'visualizer', topk: int = 10, line_width: float = 3,
                 font_size: int = 13, **kwargs):
        super().__init__(name=name, line_width=line_width, **kwargs)
        if topk < 1:
            raise ValueError(f'HOILocalVisualizer topk must be >= 1, got {topk}')
        self.topk = topk
        self.font_size = font_size

    def _names(self) -> Tuple[Sequence[str], Sequence[str]]:
        meta = self.dataset_meta or {}
        verbs = meta.get('verb_classes') or hico_meta().verb_names
        objects = meta.get('classes') or hico_meta().object_names
        return verbs, objects

    def draw_hoi(self, image: np.ndarray, pred_hoi, score_thr: float = 0.0,
                 topk: Optional[int] = None) -> np.ndarray:
        """Draw the top triplets of ``pred_hoi`` on an RGB ``image``; returns the RGB picture."""
        trip = select_triplets(pred_hoi, topk or self.topk, score_thr)
        self.set_image(image)
        h, w = image.shape[:2]
        if not len(trip['scores']):
            return self.get_image()
        scale = max(h, w) / 640
        lw = max(1.0, self.line_width * scale)
        font = max(6, int(round(self.font_size * scale)))
        limit = np.array([w - 1, h - 1, w - 1, h - 1], dtype=np.float64)
        sub = np.clip(trip['sub_bboxes'], 0, limit)
        obj = np.clip(trip['obj_bboxes'], 0, limit)
        verbs, objects = self._names()
        pairs: Dict[tuple, List[int]] = {}
        for i in range(len(sub)):  # group the triplets of one pair of boxes
            pairs.setdefault(tuple(np.round(np.r_[sub[i], obj[i]], 1)), []).append(i)
        labels, positions, colours, placed = [], [], [], []
        for p, rows in enumerate(pairs.values()):
            colour = PAIR_COLOURS[p % len(PAIR_COLOURS)]
            i = rows[0]
            cs = (sub[i, :2] + sub[i, 2:]) / 2
            co = (obj[i, :2] + obj[i, 2:]) / 2
            self.draw_bboxes(sub[i:i + 1], edge_colors=[colour], line_widths=lw)
            self.draw_bboxes(obj[i:i + 1], edge_colors=[colour], line_styles='--',
                             line_widths=lw)
            self.draw_lines(np.array([cs[0], co[0]]), np.array([cs[1], co[1]]),
                            colors=[colour], line_widths=lw)
            self.draw_points(np.stack([cs, co]), colors=[colour], sizes=np.array([4 * lw] * 2))
            text = '\n'.join(
                f'{verbs[int(trip["verb_labels"][r])]} '
                f'{objects[int(trip["obj_labels"][r])]} {trip["scores"][r]:.2f}' for r in rows)
            labels.append(text)
            positions.append(self._place_label(text, sub[i], obj[i], font, placed, w, h))
            colours.append(colour)
        self.draw_texts(labels, np.array(positions), font_sizes=font, colors='white',
                        vertical_alignments='top', horizontal_alignments='left',
                        bboxes=[dict(facecolor=tuple(c / 255 for c in colour), alpha=0.75,
                                     pad=0.4, edgecolor='none') for colour in colours])
        return self.get_image()

    @staticmethod
    def _place_label(text: str, sub: np.ndarray, obj: np.ndarray, font: int, placed: list,
                     w: int, h: int) -> Tuple[float, float]:
        """Top-left corner of a label block: at the top-left of the pair's boxes, moved down
        below earlier blocks it would cover (sizes estimated from the font size)."""
        lines = text.split('\n')
        bw = 0.62 * font * max(map(len, lines)) + font
        bh = 1.45 * font * len(lines) + 0.5 * font
        x = float(min(sub[0], obj[0]))
        y = float(min(sub[1], obj[1]))
        x = min(max(x, 0.0), max(w - bw, 0.0))
        for _ in range(len(placed) + 1):
            hit = [py + ph for px, py, pw, ph in placed
                   if x < px + pw and px < x + bw and y < py + ph and py < y + bh]
            if not hit:
                break
            y = max(hit) + 1
        placed.append((x, y, bw, bh))
        return x, min(y, max(h - bh, 0.0))

    def add_datasample(self, name: str, image: np.ndarray, data_sample=None,
                       draw_gt: bool = True, draw_pred: bool = True, show: bool = False,
                       wait_time: float = 0, out_file: Optional[str] = None,
                       pred_score_thr: float = 0.0, step: int = 0) -> None:
        """Draw the HOI prediction of ``data_sample`` (RGB ``image``) and save/show it, with
        the signature of mmdet's ``DetLocalVisualizer.add_datasample`` (used by mmdet's
        ``DetVisualizationHook``). Ground truth is not drawn for HOI samples."""
        if data_sample is None or 'pred_hoi' not in data_sample or not draw_pred:
            return super().add_datasample(name, image, data_sample, draw_gt, draw_pred, show,
                                          wait_time, out_file, pred_score_thr, step)
        image = image.clip(0, 255).astype(np.uint8)
        drawn = self.draw_hoi(image, data_sample.pred_hoi, score_thr=pred_score_thr)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            import mmcv
            mmcv.imwrite(drawn[..., ::-1], out_file)
        else:
            self.add_image(name, drawn, step)
