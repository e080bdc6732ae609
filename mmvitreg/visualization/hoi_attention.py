"""Decoder cross-attention of an HOI detector's queries, in image coordinates.

What the DropKey paper's HICO-DET figure shows: where the decoder query behind a detected
(subject, verb, object) triplet looks in the encoder's feature map. For a DETR-family detector
(QPIC) the map of query ``q`` in a decoder layer's cross-attention is a row over the ``h x w``
memory tokens; :func:`decoder_query_attention` records those rows (softmax probabilities without
dropout or DropKey, mean over heads) while the model predicts one image, and
:func:`box_attention_share` measures how much of a row falls inside the triplet's two boxes.
"""
import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ['QueryAttention', 'decoder_query_attention', 'memory_grid', 'box_attention_share',
           'triplets_by_query']


class QueryAttention:
    """The prediction and the cross-attention maps of one image.

    Attributes:
        data_sample: the model's prediction (``pred_hoi`` with ``query_index``).
        maps: ``(L, Q, h, w)`` cross-attention per decoder layer and query (mean over heads)
            over the padded input's memory grid.
        stride: pixels of the padded network input per grid cell.
        scale: ``(w_scale, h_scale)`` from the original image to the network input.
    """

    def __init__(self, data_sample, maps: torch.Tensor, stride: int,
                 scale: Tuple[float, float]) -> None:
        self.data_sample = data_sample
        self.maps = maps
        self.stride = stride
        self.scale = scale

    def cell_centres(self) -> Tuple[np.ndarray, np.ndarray]:
        """x and y centres of the grid cells in original image pixels."""
        h, w = self.maps.shape[-2:]
        xs = (np.arange(w) + 0.5) * self.stride / self.scale[0]
        ys = (np.arange(h) + 0.5) * self.stride / self.scale[1]
        return xs, ys


def memory_grid(num_tokens: int, padded_hw: Sequence[int]) -> Tuple[int, int, int]:
    """``(h, w, stride)`` of the feature map of ``num_tokens`` cells behind a padded input of
    ``padded_hw`` pixels (the backbone's output stride, ceil-divided as a strided CNN does)."""
    height, width = (int(v) for v in padded_hw)
    for stride in range(1, max(height, width) + 1):
        h, w = math.ceil(height / stride), math.ceil(width / stride)
        if h * w == num_tokens:
            return h, w, stride
        if h * w < num_tokens:
            break
    raise ValueError(f'{num_tokens} memory tokens do not tile a {height}x{width} input at any '
                     'stride; is this a DETR-style decoder over one feature map?')


def _cross_attention_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    from mmvitreg.utils.attention_maps import find_attention_layers
    layers = [(n, m) for n, m in find_attention_layers(model) if n.split('.')[-1] == 'cross_attn'
              and '.decoder.' in f'.{n}']
    if not layers:
        raise ValueError(f'{type(model).__name__} has no decoder cross-attention '
                         '(expected a DETR-style HOI detector such as QPIC)')
    return layers


@torch.no_grad()
def decoder_query_attention(model: nn.Module, image) -> QueryAttention:
    """Predict ``image`` (file or BGR array) with an HOI detector built by
    :func:`mmvitreg.apis.init_hoi_model` and record every decoder cross-attention map."""
    from mmvitreg.apis import inference_hoi
    from mmvitreg.utils.attention_maps import attention_map_of
    layers = _cross_attention_layers(model)
    maps: List[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]

    def hook_for(index: int):
        def hook(module, args, kwargs, output):
            maps[index] = attention_map_of(module, *args, stage='softmax', **kwargs).float()
        return hook

    handles = [m.register_forward_hook(hook_for(i), with_kwargs=True)
               for i, (_, m) in enumerate(layers)]
    try:
        sample = inference_hoi(model, image)
    finally:
        for handle in handles:
            handle.remove()
    if any(m is None for m in maps):
        raise RuntimeError('a decoder cross-attention did not run during prediction')
    if 'query_index' not in sample.pred_hoi:
        raise ValueError('the prediction has no `query_index` (pred_hoi of QPICHead): cannot '
                         'tell which query made which triplet')
    stacked = torch.stack([m[0].mean(0) for m in maps])  # (L, Q, N): image 0, mean over heads
    meta = sample.metainfo
    h, w, stride = memory_grid(stacked.shape[-1], meta.get('batch_input_shape', meta['img_shape']))
    scale = meta.get('scale_factor', (1.0, 1.0))
    return QueryAttention(sample, stacked.reshape(len(maps), -1, h, w).cpu(), stride,
                          (float(scale[0]), float(scale[1])))


def box_attention_share(grid_map: torch.Tensor, xs: np.ndarray, ys: np.ndarray,
                        boxes: Sequence[Sequence[float]]) -> float:
    """Share of an ``(h, w)`` attention map whose cells (centres ``xs``, ``ys``) lie inside the
    union of ``boxes`` (``x1, y1, x2, y2``, same pixels as the centres)."""
    grid = grid_map.detach().cpu().double().numpy()
    inside = np.zeros(grid.shape, bool)
    gx, gy = np.meshgrid(xs, ys)
    for x1, y1, x2, y2 in boxes:
        inside |= (gx >= x1) & (gx <= x2) & (gy >= y1) & (gy <= y2)
    total = grid.sum()
    return float(grid[inside].sum() / total) if total > 0 else 0.0


def triplets_by_query(pred_hoi, topk: int, score_thr: float = 0.0) -> List[dict]:
    """The ``topk`` best *queries* (a query's triplets share its pair and its map): per query its
    boxes, object label, best score and the verbs scoring at least half of it, by decreasing
    best score."""
    if topk < 1:
        raise ValueError(f'topk must be >= 1, got {topk}')
    scores = pred_hoi.scores.detach().cpu().numpy()
    order = np.argsort(-scores, kind='stable')
    found: dict = {}
    for i in order:
        if scores[i] < score_thr:
            break
        q = int(pred_hoi.query_index[i])
        if q not in found:
            if len(found) == topk:
                continue
            found[q] = dict(query=q, score=float(scores[i]), verbs=[],
                            obj_label=int(pred_hoi.obj_labels[i]),
                            sub_bbox=[float(v) for v in pred_hoi.sub_bboxes[i]],
                            obj_bbox=[float(v) for v in pred_hoi.obj_bboxes[i]])
        if scores[i] >= found[q]['score'] / 2:
            found[q]['verbs'].append(int(pred_hoi.verb_labels[i]))
    return list(found.values())
