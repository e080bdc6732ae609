"""Set matching of QPIC (Tamura et al., CVPR 2021): HOI match costs and the Hungarian assigner.

QPIC matches each ground-truth *interaction* (a subject box, an object box, an object class and
a multi-hot verb vector) to one decoder query by minimising

    C = w_obj * C_obj + w_verb * C_verb + w_l1 * C_l1 + w_giou * C_giou

with ``scipy.optimize.linear_sum_assignment`` per image (official code:
``hitachi-rd-cv/qpic``, ``models/matcher.py``; defaults there w = 1, 1, 2.5, 1).

Functional core (pure tensor functions, shapes ``(num_queries, num_gts)``):

* :func:`hoi_obj_class_cost` -- ``-softmax(obj_logits)[:, gt_label]`` (paper Eq. 3, as DETR).
* :func:`hoi_verb_cost` -- minus the mean of the average predicted probability of the positive
  verbs and the average predicted "absent" probability of the negative verbs (the official
  code's formula, which the paper abbreviates as a verb-classification cost).
* :func:`hoi_box_l1_cost` -- L1 distance of normalised ``(cx, cy, w, h)`` boxes; the cost of a
  pair is the **max** of the subject and object costs (paper Eq. 4).
* :func:`hoi_giou_cost` -- ``-GIoU``, again the max over subject and object.

Both box costs follow the official handling of interactions *without* an object (V-COCO; an
all-zero ground-truth object box): the object L1 term is zeroed and the object GIoU term is
replaced by the subject one. On HICO-DET every interaction has an object, so this never fires.

Registered wrappers (``mmdet`` ``TASK_UTILS``, interface of mmdet's ``BaseMatchCost``):
``HOIClassCost``, ``VerbCost``, ``HOIBoxL1Cost``, ``HOIGIoUCost`` and ``HOIHungarianAssigner``
(mmdet's ``HungarianAssigner`` -- cost summation + scipy -- with input validation).

Instance fields used by the costs (boxes ``xyxy`` in pixels of ``img_meta['img_shape']``, like
mmdet's ``DETRHead`` passes them):

* ``pred_instances``: ``obj_scores`` (Q, C+1) object logits (last = no-object),
  ``verb_scores`` (Q, V) verb logits, ``sub_bboxes`` (Q, 4), ``obj_bboxes`` (Q, 4).
* ``gt_instances``: ``labels`` (P,) object classes, ``verb_labels`` (P, V) multi-hot,
  ``sub_bboxes`` (P, 4), ``obj_bboxes`` (P, 4).
"""
from typing import List, Optional, Sequence, Union

import torch
from mmdet.models.task_modules.assigners import AssignResult, HungarianAssigner
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps, bbox_xyxy_to_cxcywh
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    'hoi_obj_class_cost', 'hoi_verb_cost', 'hoi_box_l1_cost', 'hoi_giou_cost',
    'missing_object_mask', 'HOIClassCost', 'VerbCost', 'HOIBoxL1Cost', 'HOIGIoUCost',
    'HOIHungarianAssigner'
]

PRED_FIELDS = ('obj_scores', 'verb_scores', 'sub_bboxes', 'obj_bboxes')
GT_FIELDS = ('labels', 'verb_labels', 'sub_bboxes', 'obj_bboxes')


# ----------------------------------------------------------------------------- functional core
def hoi_obj_class_cost(obj_logits: Tensor, gt_labels: Tensor) -> Tensor:
    """Object-class cost ``-p_q(c_j)`` with ``p = softmax(obj_logits)`` (no-object included).

    Args:
        obj_logits: (Q, C+1) object-class logits of the queries.
        gt_labels: (P,) ground-truth object classes in ``[0, C)``.

    Returns:
        (Q, P) cost matrix.
    """
    if obj_logits.dim() != 2:
        raise ValueError(f'obj_logits must have shape (num_queries, num_classes + 1), '
                         f'got {tuple(obj_logits.shape)}')
    prob = obj_logits.float().softmax(-1)
    return -prob[:, gt_labels.long()]


def hoi_verb_cost(verb_logits: Tensor, gt_verbs: Tensor, eps: float = 1e-4) -> Tensor:
    """Multi-label verb cost of the official QPIC matcher.

    ``-(p @ y / |y| + (1 - p) @ (1 - y) / |1 - y|) / 2`` with ``p = sigmoid(verb_logits)``:
    the mean probability the query gives to the ground-truth verbs, averaged with the mean
    probability it gives to the absence of the other verbs (``eps`` guards empty sets, as in
    the official code).

    Args:
        verb_logits: (Q, V) verb logits.
        gt_verbs: (P, V) multi-hot verb targets.
        eps: denominator guard.

    Returns:
        (Q, P) cost matrix.
    """
    if verb_logits.shape[-1] != gt_verbs.shape[-1]:
        raise ValueError(f'verb_logits has {verb_logits.shape[-1]} verb classes but the '
                         f'targets have {gt_verbs.shape[-1]}')
    prob = verb_logits.float().sigmoid()
    tgt = gt_verbs.float().t()  # (V, P)
    pos = prob.matmul(tgt) / (tgt.sum(0, keepdim=True) + eps)
    neg = (1 - prob).matmul(1 - tgt) / ((1 - tgt).sum(0, keepdim=True) + eps)
    return -(pos + neg) / 2


def missing_object_mask(gt_obj_boxes: Tensor) -> Tensor:
    """(P,) bool: interactions without an object (all-zero object box, the official convention)."""
    return (gt_obj_boxes == 0).all(dim=-1)


def hoi_box_l1_cost(pred_sub: Tensor, pred_obj: Tensor, gt_sub: Tensor,
                    gt_obj: Tensor) -> Tensor:
    """Pairwise L1 box cost, ``max(L1(sub), L1(obj))`` (paper Eq. 4).

    All boxes must be in the same (normalised ``cx, cy, w, h`` in QPIC) format. The object term
    is zeroed for interactions whose ground-truth object box is all zeros (no object).

    Returns:
        (Q, P) cost matrix.
    """
    cost_sub = torch.cdist(pred_sub.float(), gt_sub.float(), p=1)
    if gt_sub.shape[0] == 0:
        return cost_sub
    cost_obj = torch.cdist(pred_obj.float(), gt_obj.float(), p=1)
    cost_obj = cost_obj * (~missing_object_mask(gt_obj)).unsqueeze(0)
    return torch.maximum(cost_sub, cost_obj)


def hoi_giou_cost(pred_sub: Tensor, pred_obj: Tensor, gt_sub: Tensor, gt_obj: Tensor) -> Tensor:
    """Pairwise GIoU box cost, ``max(-GIoU(sub), -GIoU(obj))`` on ``xyxy`` boxes (paper Eq. 4).

    For interactions without an object (all-zero ground-truth object box) the official code adds
    the subject cost to the object one; this function does the same.

    Returns:
        (Q, P) cost matrix.
    """
    cost_sub = -bbox_overlaps(pred_sub.float(), gt_sub.float(), mode='giou')
    if gt_sub.shape[0] == 0:
        return cost_sub
    cost_obj = -bbox_overlaps(pred_obj.float(), gt_obj.float(), mode='giou')
    cost_obj = cost_obj + cost_sub * missing_object_mask(gt_obj).unsqueeze(0)
    return torch.maximum(cost_sub, cost_obj)


# ----------------------------------------------------------------------------- match costs
def _check_fields(instances: InstanceData, fields: Sequence[str], what: str) -> None:
    missing = [f for f in fields if f not in instances]
    if missing:
        raise KeyError(f'{what} lacks the HOI field(s) {missing}; HOI match costs need '
                       f'{list(fields)}')


def image_factors(img_meta: Optional[dict], like: Tensor) -> Tensor:
    """``(w, h, w, h)`` of ``img_meta['img_shape']``, the divisor normalising pixel boxes."""
    if img_meta is None or 'img_shape' not in img_meta:
        raise KeyError("HOIBoxL1Cost with box_format='xywh' needs img_meta['img_shape'] to "
                       'normalise the boxes')
    img_h, img_w = img_meta['img_shape'][:2]
    return like.new_tensor([img_w, img_h, img_w, img_h])


def _normalize_cxcywh(boxes: Tensor, instances: InstanceData, img_meta: Optional[dict]) -> Tensor:
    """Pixel ``xyxy`` -> normalised ``cxcywh``, by the instances' own ``img_factors`` (one row
    per box, set by :meth:`HOIHungarianAssigner.assign_batch`) or by ``img_meta``."""
    factors = instances.img_factors if 'img_factors' in instances else \
        image_factors(img_meta, boxes)
    return bbox_xyxy_to_cxcywh(boxes / factors)


@TASK_UTILS.register_module()
class HOIClassCost(BaseMatchCost):
    """Object-class match cost of QPIC (:func:`hoi_obj_class_cost`) times ``weight``."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        return hoi_obj_class_cost(pred_instances.obj_scores, gt_instances.labels) * self.weight


@TASK_UTILS.register_module()
class VerbCost(BaseMatchCost):
    """Multi-label verb match cost of QPIC (:func:`hoi_verb_cost`) times ``weight``."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        return hoi_verb_cost(pred_instances.verb_scores, gt_instances.verb_labels) * self.weight


@TASK_UTILS.register_module()
class HOIBoxL1Cost(BaseMatchCost):
    """L1 box match cost of QPIC, max over subject and object (:func:`hoi_box_l1_cost`).

    Args:
        box_format: ``'xywh'`` (default, QPIC/DETR) normalises the pixel ``xyxy`` boxes by
            ``img_meta['img_shape']`` and converts them to ``(cx, cy, w, h)`` first; ``'xyxy'``
            uses the boxes as given.
        weight: cost weight (2.5 in the official HICO-DET recipe).
    """

    def __init__(self, box_format: str = 'xywh', weight: Union[float, int] = 1.) -> None:
        super().__init__(weight=weight)
        if box_format not in ('xyxy', 'xywh'):
            raise ValueError(f"HOIBoxL1Cost box_format must be 'xyxy' or 'xywh', "
                             f'got {box_format!r}')
        self.box_format = box_format

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        boxes = [(pred_instances, 'sub_bboxes'), (pred_instances, 'obj_bboxes'),
                 (gt_instances, 'sub_bboxes'), (gt_instances, 'obj_bboxes')]
        if self.box_format == 'xywh':  # an all-zero "no object" box stays all-zero
            boxes = [_normalize_cxcywh(inst.get(key), inst, img_meta) for inst, key in boxes]
        else:
            boxes = [inst.get(key) for inst, key in boxes]
        return hoi_box_l1_cost(*boxes) * self.weight


@TASK_UTILS.register_module()
class HOIGIoUCost(BaseMatchCost):
    """GIoU match cost of QPIC, max over subject and object (:func:`hoi_giou_cost`).

    Boxes are ``xyxy`` (pixels or normalised: GIoU does not depend on the scale).
    """

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        return hoi_giou_cost(pred_instances.sub_bboxes, pred_instances.obj_bboxes,
                             gt_instances.sub_bboxes, gt_instances.obj_bboxes) * self.weight


@TASK_UTILS.register_module()
class HOIHungarianAssigner(HungarianAssigner):
    """One-to-one query/interaction matching of QPIC.

    mmdet's :class:`HungarianAssigner` (weighted sum of the ``match_costs``, then scipy's
    ``linear_sum_assignment`` on CPU) applied to HOI instances; see the module docstring for the
    fields. The defaults are the official HICO-DET costs.

    Returns an ``AssignResult`` whose ``gt_inds`` is 0 for unmatched queries and ``j + 1`` for a
    query matched to interaction ``j``; ``labels`` holds the matched object classes.
    """

    def __init__(self,
                 match_costs: Union[List[dict], dict] = (
                     dict(type='HOIClassCost', weight=1.0),
                     dict(type='VerbCost', weight=1.0),
                     dict(type='HOIBoxL1Cost', weight=2.5, box_format='xywh'),
                     dict(type='HOIGIoUCost', weight=1.0),
                 )) -> None:
        if isinstance(match_costs, tuple):
            match_costs = list(match_costs)
        if isinstance(match_costs, list) and not match_costs:
            raise ValueError('HOIHungarianAssigner needs at least one match cost, got []')
        super().__init__(match_costs=match_costs)

    def assign(self, pred_instances: InstanceData, gt_instances: InstanceData,
               img_meta: Optional[dict] = None, **kwargs) -> AssignResult:
        _check_fields(gt_instances, GT_FIELDS, 'gt_instances')
        if len(gt_instances) > 0 and len(pred_instances) > 0:
            _check_fields(pred_instances, PRED_FIELDS, 'pred_instances')
        return super().assign(pred_instances, gt_instances, img_meta=img_meta, **kwargs)

    def assign_batch(self, preds: Sequence[InstanceData], gts: Sequence[InstanceData],
                     img_metas: Sequence[dict]) -> List[AssignResult]:
        """:meth:`assign` for every image of a batch, with the costs computed once.

        As the official matcher does, every cost is evaluated on the concatenated predictions
        and targets of the batch (each image's boxes normalised by its own image shape), and
        ``linear_sum_assignment`` then runs on each image's diagonal block: the same costs and
        matches as image by image, without the per-image overhead that dominates a training
        step of a small QPIC.
        """
        if not (len(preds) == len(gts) == len(img_metas)):
            raise ValueError(f'assign_batch got {len(preds)} predictions, {len(gts)} targets '
                             f'and {len(img_metas)} image metas')
        for gt in gts:
            _check_fields(gt, GT_FIELDS, 'gt_instances')
        for pred in preds:
            _check_fields(pred, PRED_FIELDS, 'pred_instances')

        def flat(instances: Sequence[InstanceData], fields: Sequence[str]) -> InstanceData:
            out = InstanceData()
            for key in fields:
                setattr(out, key, torch.cat([inst.get(key) for inst in instances]))
            out.img_factors = torch.cat([
                image_factors(meta, inst.get(fields[-1])).expand(len(inst), 4)
                for inst, meta in zip(instances, img_metas)])
            return out

        sizes = [(len(p), len(g)) for p, g in zip(preds, gts)]
        cost = None
        if sum(g for _, g in sizes):
            flat_pred, flat_gt = flat(preds, PRED_FIELDS), flat(gts, GT_FIELDS)
            cost = sum(c(flat_pred, flat_gt, img_meta=None) for c in self.match_costs)
            cost = cost.detach().cpu()
        results, q0, g0 = [], 0, 0
        for (nq, ng), gt in zip(sizes, gts):
            block = None if cost is None else cost[q0:q0 + nq, g0:g0 + ng]
            results.append(self._result_from_cost(block, gt.labels, nq))
            q0, g0 = q0 + nq, g0 + ng
        return results

    @staticmethod
    def _result_from_cost(cost: Optional[Tensor], gt_labels: Tensor,
                          num_preds: int) -> AssignResult:
        """mmdet ``HungarianAssigner``'s result from a (Q, P) cost block."""
        device = gt_labels.device
        num_gts = len(gt_labels)
        assigned = torch.zeros(num_preds, dtype=torch.long, device=device)
        labels = torch.full((num_preds, ), -1, dtype=torch.long, device=device)
        if num_gts and num_preds:
            rows, cols = linear_sum_assignment(cost.numpy())
            rows = torch.from_numpy(rows).to(device)
            cols = torch.from_numpy(cols).to(device)
            assigned[rows] = cols + 1
            labels[rows] = gt_labels[cols]
        return AssignResult(num_gts=num_gts, gt_inds=assigned, max_overlaps=None,
                            labels=labels)
