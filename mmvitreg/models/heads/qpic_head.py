"""QPIC head: per-query (subject box, object box, object class, verbs), set losses, decoding.

QPIC (Tamura et al., CVPR 2021; official code ``hitachi-rd-cv/qpic``, ``models/hoi.py``) attaches
four small heads to every DETR decoder output embedding:

* object class: ``Linear(d, C + 1)`` (softmax, last = no-object),
* verbs: ``Linear(d, V)`` (sigmoid, multi-label),
* subject and object boxes: one 3-layer MLP each (``d -> d -> d -> 4``, ReLU, sigmoid output,
  normalised ``cx, cy, w, h``). Built here like mmdet's ``DETRHead`` regression branch (mmcv
  ``FFN`` + ReLU + ``Linear``), i.e. the same function as the official ``MLP``.

Losses (per decoder layer, each with its own Hungarian matching, as the official code):

* ``loss_obj_cls``: cross entropy with no-object weight 0.1 (mmdet ``CrossEntropyLoss`` with a
  class weight; normalised by the sum of target weights = ``F.cross_entropy`` weighted mean).
* ``loss_verb_cls``: the official "modified focal loss" (CornerNet, alpha=2 on the probability,
  (1 - y)^4 on negatives) over all queries x verbs, normalised by the number of positive verb
  labels -- mmdet's ``GaussianFocalLoss`` is exactly this loss for 0/1 targets. A sigmoid loss
  on logits (e.g. ``CrossEntropyLoss(use_sigmoid=True)``, the official ``bce`` option) is
  accepted too.
* ``loss_sub_bbox``/``loss_obj_bbox`` (L1 on normalised cxcywh) and ``loss_sub_iou``/
  ``loss_obj_iou`` (GIoU); subject terms are averaged over the number of interactions (all-reduced
  over processes), object terms over the local number of interactions that have an object box
  (+1e-4), as in the official code.
* auxiliary copies with prefix ``d{i}.`` for decoder layers 0..L-2 (mmdet naming).

Inference (:func:`qpic_postprocess`, a pure function): ``score(q, v) = sigmoid(verb_q)[v] *
max_c softmax(obj_q)[c]``, multiplied by the HICO-DET verb-object validity matrix
(``corre_hico.npy``; the official evaluator applies it), then the top-K (100) (query, verb)
triplets per image. Deliberate difference: boxes are clamped to the image before rescaling to
the original image, like mmdet's ``DETRHead`` (the official code does not clamp).
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn import Linear
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.losses import GaussianFocalLoss
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS as DET_MODELS
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh, get_box_tensor
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmvitreg.registry import MODELS

__all__ = ['QPICHead', 'qpic_postprocess', 'hoi_targets_from_sample', 'merge_duplicate_pairs',
           'load_corre_matrix']


# ----------------------------------------------------------------------------- pure functions
def qpic_postprocess(obj_logits: Tensor,
                     verb_logits: Tensor,
                     sub_boxes: Tensor,
                     obj_boxes: Tensor,
                     img_shape: Sequence[int],
                     scale_factor: Optional[Sequence[float]] = None,
                     corre: Optional[Tensor] = None,
                     topk: int = 100) -> Dict[str, Tensor]:
    """Decode one image's QPIC outputs into its top-K HOI triplets.

    Paper/official code: the object score of a query is ``max_c softmax(obj)[c]`` over the real
    classes (no-object dropped), the triplet score of (query, verb) is
    ``sigmoid(verb) * object score``; the official HICO-DET evaluator multiplies it by
    ``corre[verb, object class]`` (0/1 validity of the verb-object combination) and keeps the 100
    best (query, verb) triplets. Masked triplets keep score 0 and can still fill the top-K when
    fewer valid ones exist, as in the official evaluator.

    Args:
        obj_logits: (Q, C+1) object logits.
        verb_logits: (Q, V) verb logits.
        sub_boxes: (Q, 4) subject boxes, normalised ``cx, cy, w, h`` in ``[0, 1]``.
        obj_boxes: (Q, 4) object boxes, same format.
        img_shape: ``(h, w)`` of the network input image (before padding).
        scale_factor: ``(w_scale, h_scale)`` from the original image to ``img_shape``; boxes
            are divided by it (original image coordinates). ``None`` keeps ``img_shape`` pixels.
        corre: optional (V, C) verb-object validity matrix.
        topk: number of triplets kept (all Q*V when larger).

    Returns:
        dict with ``sub_bboxes`` (K, 4), ``obj_bboxes`` (K, 4) xyxy, ``obj_labels`` (K,),
        ``verb_labels`` (K,), ``scores`` (K,), sorted by decreasing score, and ``query_index``
        (K,): the query each triplet comes from (to look up its attention maps).
    """
    if topk < 1:
        raise ValueError(f'topk must be a positive integer, got {topk}')
    num_queries, num_verbs = verb_logits.shape
    if obj_logits.shape[0] != num_queries:
        raise ValueError(f'obj_logits has {obj_logits.shape[0]} queries but verb_logits has '
                         f'{num_queries}')
    num_obj = obj_logits.shape[-1] - 1
    obj_scores, obj_labels = obj_logits.float().softmax(-1)[:, :-1].max(-1)
    scores = verb_logits.float().sigmoid() * obj_scores.unsqueeze(-1)  # (Q, V)
    if corre is not None:
        if tuple(corre.shape) != (num_verbs, num_obj):
            raise ValueError(f'corre must have shape (num_verbs, num_obj_classes) = '
                             f'{(num_verbs, num_obj)}, got {tuple(corre.shape)}')
        scores = scores * corre.to(scores)[:, obj_labels].t()

    img_h, img_w = img_shape[:2]
    factor = sub_boxes.new_tensor([img_w, img_h, img_w, img_h]).float()
    boxes = []
    for b in (sub_boxes, obj_boxes):
        b = bbox_cxcywh_to_xyxy(b.float()) * factor
        b[:, 0::2] = b[:, 0::2].clamp(min=0, max=img_w)
        b[:, 1::2] = b[:, 1::2].clamp(min=0, max=img_h)
        if scale_factor is not None:
            b = b / b.new_tensor(scale_factor).repeat(2)
        boxes.append(b)

    k = min(topk, scores.numel())
    top_scores, top_idx = scores.flatten().topk(k)
    query = torch.div(top_idx, num_verbs, rounding_mode='floor')
    return dict(sub_bboxes=boxes[0][query], obj_bboxes=boxes[1][query],
                obj_labels=obj_labels[query], verb_labels=top_idx % num_verbs,
                scores=top_scores, query_index=query)


def merge_duplicate_pairs(sub_ids: Tensor, obj_ids: Tensor,
                          verbs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """One row per distinct (subject, object) pair with the union of its verbs.

    QPIC trains with one target per pair and a multi-hot verb vector (official
    ``datasets/hico.py``); annotation files may list a pair once per verb.
    """
    if sub_ids.numel() == 0:
        return sub_ids.long(), obj_ids.long(), verbs.float()
    pairs = torch.stack([sub_ids.long(), obj_ids.long()], dim=1)
    uniq, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    merged = verbs.new_zeros((uniq.shape[0], verbs.shape[1]), dtype=torch.float)
    index = inverse.view(-1, 1).expand(-1, verbs.shape[1])
    merged.scatter_reduce_(0, index, verbs.float(), 'amax', include_self=True)
    return uniq[:, 0], uniq[:, 1], merged


def hoi_targets_from_sample(data_sample, merge_pairs: bool = True) -> InstanceData:
    """Turn a packed HOI ``DetDataSample`` (docs/DESIGN.md contract) into matching targets.

    Returns an ``InstanceData`` with ``labels`` (object classes), ``verb_labels`` (P, V),
    ``sub_bboxes``/``obj_bboxes`` (P, 4, xyxy pixels of ``img_shape``).
    """
    if 'gt_hoi' not in data_sample:
        raise KeyError('QPIC training needs `gt_hoi` (sub_ids, obj_ids, verb_labels) in each data '
                       'sample; use the HICO-DET pipeline with PackHOIInputs')
    gt_instances, gt_hoi = data_sample.gt_instances, data_sample.gt_hoi
    bboxes = get_box_tensor(gt_instances.bboxes).float()
    labels = gt_instances.labels.long()
    sub_ids = torch.as_tensor(gt_hoi.sub_ids, device=bboxes.device).long()
    obj_ids = torch.as_tensor(gt_hoi.obj_ids, device=bboxes.device).long()
    verbs = torch.as_tensor(gt_hoi.verb_labels, device=bboxes.device).float()
    if verbs.dim() != 2 or verbs.shape[0] != sub_ids.shape[0]:
        raise ValueError(f'gt_hoi.verb_labels must have shape (num_pairs, num_verbs) with '
                         f'num_pairs={sub_ids.shape[0]}, got {tuple(verbs.shape)}')
    num_inst = bboxes.shape[0]
    if sub_ids.numel() and (int(sub_ids.max()) >= num_inst or int(obj_ids.max()) >= num_inst
                            or int(sub_ids.min()) < 0 or int(obj_ids.min()) < 0):
        raise ValueError(f'gt_hoi sub_ids/obj_ids must index the {num_inst} gt_instances, got '
                         f'sub_ids={sub_ids.tolist()} obj_ids={obj_ids.tolist()}')
    if merge_pairs:
        sub_ids, obj_ids, verbs = merge_duplicate_pairs(sub_ids, obj_ids, verbs)
    return InstanceData(labels=labels[obj_ids], verb_labels=verbs, sub_bboxes=bboxes[sub_ids],
                        obj_bboxes=bboxes[obj_ids])


def load_corre_matrix(corre: Union[None, str, np.ndarray, Tensor]) -> Optional[Tensor]:
    """The (V, C) verb-object validity matrix: ``None``, ``'hico'`` (package table), a ``.npy``
    path (e.g. ``corre_hico.npy``), an HOI class table file (``.json``/``.csv``, see
    :class:`~mmvitreg.datasets.hico_meta.HOIClassTable`) or an array."""
    if corre is None:
        return None
    if isinstance(corre, str):
        from mmvitreg.datasets.hico_meta import HOIClassTable, build_corre_matrix
        if corre == 'hico':
            corre = build_corre_matrix()
        elif osp.isfile(corre) and corre.endswith(('.json', '.csv')):
            corre = HOIClassTable.from_file(corre).corre_matrix()
        elif osp.isfile(corre):
            corre = np.load(corre)
        else:
            raise FileNotFoundError(f"corre must be None, 'hico', an existing .npy file or an "
                                    f'HOI class table (.json/.csv), got {corre!r}')
    return torch.as_tensor(np.asarray(corre), dtype=torch.float32)


# ----------------------------------------------------------------------------- module
@MODELS.register_module()
class QPICHead(BaseModule):
    """Interaction head of QPIC on top of mmdet's DETR decoder.

    Args:
        num_obj_classes: object classes without no-object (80 for HICO-DET).
        num_verb_classes: verb classes (117 for HICO-DET).
        embed_dims: decoder width.
        num_reg_fcs: hidden layers of each box MLP before the output ``Linear`` (2 -> 3 layers).
        loss_obj_cls: object-class loss (``bg_cls_weight`` = no-object weight, 0.1 in QPIC).
        loss_verb_cls: verb loss; ``GaussianFocalLoss`` receives probabilities and is normalised
            by the number of positive verb labels, any other loss receives logits and averages
            over all query x verb entries.
        loss_bbox: L1 box loss (weight 2.5 in the official HICO-DET recipe).
        loss_iou: GIoU loss (weight 1).
        train_cfg: ``dict(assigner=...)``, default ``HOIHungarianAssigner`` (costs 1, 1, 2.5, 1).
        test_cfg: ``max_per_img`` (top-K triplets, 100) and ``corre`` (``'hico'``, a ``.npy``
            path or ``None``; see :func:`load_corre_matrix`).
        merge_duplicate_pairs: merge repeated (subject, object) rows of ``gt_hoi`` into one
            multi-hot target (official training behaviour).
    """

    def __init__(self,
                 num_obj_classes: int = 80,
                 num_verb_classes: int = 117,
                 embed_dims: int = 256,
                 num_reg_fcs: int = 2,
                 loss_obj_cls: dict = dict(type='CrossEntropyLoss', use_sigmoid=False,
                                           loss_weight=1.0, class_weight=1.0,
                                           bg_cls_weight=0.1),
                 loss_verb_cls: dict = dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0,
                                            loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=2.5),
                 loss_iou: dict = dict(type='GIoULoss', loss_weight=1.0),
                 train_cfg: Optional[dict] = dict(assigner=dict(type='HOIHungarianAssigner')),
                 test_cfg: Optional[dict] = dict(max_per_img=100, corre='hico'),
                 merge_duplicate_pairs: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('num_obj_classes', num_obj_classes),
                            ('num_verb_classes', num_verb_classes), ('embed_dims', embed_dims)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'QPICHead {name} must be a positive integer, got {value!r}')
        self.num_obj_classes = num_obj_classes
        self.num_verb_classes = num_verb_classes
        self.embed_dims = embed_dims
        self.num_reg_fcs = num_reg_fcs
        self.merge_pairs = merge_duplicate_pairs
        self.train_cfg = train_cfg
        self.test_cfg = dict(test_cfg or {})

        loss_obj_cls = dict(loss_obj_cls)
        if loss_obj_cls.get('use_sigmoid', False):
            raise ValueError('QPICHead loss_obj_cls must be a softmax loss (use_sigmoid=False): '
                             'QPIC classifies objects with a no-object class')
        class_weight = loss_obj_cls.get('class_weight', 1.0)
        self.bg_cls_weight = float(loss_obj_cls.pop('bg_cls_weight', class_weight))
        if isinstance(class_weight, (int, float)):
            weights = [float(class_weight)] * num_obj_classes + [self.bg_cls_weight]
            loss_obj_cls['class_weight'] = weights
        self.loss_obj_cls = DET_MODELS.build(loss_obj_cls)
        self.loss_verb_cls = DET_MODELS.build(loss_verb_cls)
        self.verb_loss_on_probs = isinstance(self.loss_verb_cls, GaussianFocalLoss)
        self.loss_bbox = DET_MODELS.build(loss_bbox)
        self.loss_iou = DET_MODELS.build(loss_iou)
        self.assigner = TASK_UTILS.build(train_cfg['assigner']) if train_cfg else None

        corre = load_corre_matrix(self.test_cfg.get('corre', None))
        self.register_buffer('corre', corre, persistent=False)
        self._init_layers()

    def _init_layers(self) -> None:
        d = self.embed_dims
        self.fc_obj_cls = Linear(d, self.num_obj_classes + 1)
        self.fc_verb_cls = Linear(d, self.num_verb_classes)
        self.activate = nn.ReLU()
        for who in ('sub', 'obj'):
            setattr(self, f'{who}_reg_ffn',
                    FFN(d, d, self.num_reg_fcs, dict(type='ReLU', inplace=True), dropout=0.0,
                        add_residual=False))
            setattr(self, f'{who}_fc_reg', Linear(d, 4))

    # --------------------------------------------------------------------- checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Initialise from a COCO DETR checkpoint (mmdet ``DETRHead`` keys).

        The official QPIC recipe starts from DETR (``convert_parameters.py``): the class layer
        becomes the object-class layer and the box MLP initialises both the subject and the
        object MLP. mmdet's DETR checkpoints already use 80 contiguous classes + no-object, so
        the mapping is a rename (done when the checkpoint has DETR keys and no QPIC keys).
        """
        if prefix + 'fc_cls.weight' in state_dict and prefix + 'fc_obj_cls.weight' not in \
                state_dict:
            for key in [k for k in list(state_dict) if k.startswith(prefix)]:
                rest = key[len(prefix):]
                if rest.startswith('fc_cls.'):
                    value = state_dict.pop(key)
                    if value.shape[0] == self.num_obj_classes + 1:
                        state_dict[prefix + 'fc_obj_' + rest[3:]] = value
                elif rest.startswith(('reg_ffn.', 'fc_reg.')):
                    value = state_dict.pop(key)
                    for who in ('sub', 'obj'):
                        state_dict[f'{prefix}{who}_{rest}'] = value.clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # --------------------------------------------------------------------- forward
    def forward(self, hidden_states: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(L, B, Q, d) decoder states -> object logits (L, B, Q, C+1), verb logits (L, B, Q, V),
        subject and object boxes (L, B, Q, 4), sigmoid-normalised ``cx, cy, w, h``."""
        obj_cls = self.fc_obj_cls(hidden_states)
        verb_cls = self.fc_verb_cls(hidden_states)
        sub_boxes = self.sub_fc_reg(self.activate(self.sub_reg_ffn(hidden_states))).sigmoid()
        obj_boxes = self.obj_fc_reg(self.activate(self.obj_reg_ffn(hidden_states))).sigmoid()
        return obj_cls, verb_cls, sub_boxes, obj_boxes

    def loss(self, hidden_states: Tensor, batch_data_samples: list) -> Dict[str, Tensor]:
        batch_gt = [hoi_targets_from_sample(s, self.merge_pairs) for s in batch_data_samples]
        for gt in batch_gt:
            if gt.verb_labels.shape[-1] != self.num_verb_classes:
                raise ValueError(f'gt_hoi.verb_labels has {gt.verb_labels.shape[-1]} verb '
                                 f'classes, QPICHead num_verb_classes={self.num_verb_classes}')
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        return self.loss_by_feat(*self(hidden_states), batch_gt, batch_img_metas)

    def loss_by_feat(self, all_obj_cls: Tensor, all_verb_cls: Tensor, all_sub_boxes: Tensor,
                     all_obj_boxes: Tensor, batch_gt: List[InstanceData],
                     batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        if self.assigner is None:
            raise ValueError('QPICHead needs train_cfg=dict(assigner=...) to compute losses')
        if len(batch_gt) != all_obj_cls.shape[1]:
            raise ValueError(f'got {len(batch_gt)} data samples for a batch of '
                             f'{all_obj_cls.shape[1]} images')
        num_gts = sum(len(gt) for gt in batch_gt)
        num_interactions = reduce_mean(all_obj_cls.new_tensor([float(num_gts)]))
        num_interactions = max(float(num_interactions.item()), 1.0)
        per_layer = multi_apply(self.loss_by_feat_single, all_obj_cls, all_verb_cls,
                                all_sub_boxes, all_obj_boxes, batch_gt=batch_gt,
                                batch_img_metas=batch_img_metas,
                                num_interactions=num_interactions,
                                flat_gt=self._flat_targets(batch_gt, batch_img_metas,
                                                           all_obj_cls.dtype))
        names = ('loss_obj_cls', 'loss_verb_cls', 'loss_sub_bbox', 'loss_obj_bbox',
                 'loss_sub_iou', 'loss_obj_iou')
        losses = {}
        for name, values in zip(names, per_layer):
            losses[name] = values[-1]
            for i, value in enumerate(values[:-1]):
                losses[f'd{i}.{name}'] = value
        return losses

    def _flat_targets(self, batch_gt: List[InstanceData],
                      batch_img_metas: List[dict], dtype: torch.dtype) -> dict:
        """The batch's interactions concatenated once per step (shared by every decoder
        layer): object labels, verbs, boxes, each row's ``[w, h, w, h]`` and image offsets."""
        factors = [torch.tensor([m['img_shape'][1], m['img_shape'][0]] * 2, dtype=dtype,
                                device=gt.sub_bboxes.device).expand(len(gt), 4)
                   for gt, m in zip(batch_gt, batch_img_metas)]
        sizes = torch.tensor([len(gt) for gt in batch_gt])
        return dict(labels=torch.cat([gt.labels for gt in batch_gt]).long(),
                    verbs=torch.cat([gt.verb_labels for gt in batch_gt]).float(),
                    sub=torch.cat([gt.sub_bboxes for gt in batch_gt]).float(),
                    obj=torch.cat([gt.obj_bboxes for gt in batch_gt]).float(),
                    factor=torch.cat(factors),
                    offsets=(torch.cumsum(sizes, 0) - sizes).tolist())

    def _targets(self, obj_cls: Tensor, verb_cls: Tensor, flat_gt: dict, results: list) -> tuple:
        """Classification and box targets of the batch from its assignment ``results``:
        labels (B*Q,), verbs (B*Q, V), the matched queries' flat indices (ascending, image by
        image) and their subject/object box targets (normalised ``cx, cy, w, h``)."""
        gt_inds = torch.stack([r.gt_inds for r in results])  # (B, Q): 0 or matched gt + 1
        offsets = gt_inds.new_tensor(flat_gt['offsets']).unsqueeze(-1)
        flat_pos = torch.nonzero(gt_inds.reshape(-1) > 0, as_tuple=False).squeeze(-1)
        pos_gt = (gt_inds + offsets - 1).reshape(-1)[flat_pos]
        labels = obj_cls.new_full((gt_inds.numel(), ), self.num_obj_classes, dtype=torch.long)
        labels[flat_pos] = flat_gt['labels'][pos_gt]
        verbs = verb_cls.new_zeros((gt_inds.numel(), verb_cls.shape[-1]), dtype=torch.float)
        verbs[flat_pos] = flat_gt['verbs'][pos_gt]
        factor = flat_gt['factor'][pos_gt]
        sub_t = bbox_xyxy_to_cxcywh(flat_gt['sub'][pos_gt] / factor)
        gt_obj = flat_gt['obj'][pos_gt]
        has_obj = ~(gt_obj == 0).all(-1)  # official: all-zero object box = no object
        obj_t = bbox_xyxy_to_cxcywh(gt_obj / factor) * has_obj.unsqueeze(-1)
        return labels, verbs, flat_pos, sub_t, obj_t, has_obj

    def _assign(self, obj_cls: Tensor, verb_cls: Tensor, sub_boxes: Tensor, obj_boxes: Tensor,
                batch_gt: List[InstanceData], batch_img_metas: List[dict]) -> list:
        """Hungarian matching of every image of the batch (one cost computation when the
        assigner offers ``assign_batch``, as ``HOIHungarianAssigner`` does)."""
        factors = sub_boxes.new_tensor([[m['img_shape'][1], m['img_shape'][0]] * 2
                                        for m in batch_img_metas]).unsqueeze(1)
        sub_xyxy = bbox_cxcywh_to_xyxy(sub_boxes) * factors
        obj_xyxy = bbox_cxcywh_to_xyxy(obj_boxes) * factors
        preds = [InstanceData(obj_scores=obj_cls[i], verb_scores=verb_cls[i],
                              sub_bboxes=sub_xyxy[i], obj_bboxes=obj_xyxy[i])
                 for i in range(len(batch_img_metas))]
        if hasattr(self.assigner, 'assign_batch'):
            return self.assigner.assign_batch(preds, batch_gt, batch_img_metas)
        return [self.assigner.assign(p, g, img_meta=m)
                for p, g, m in zip(preds, batch_gt, batch_img_metas)]

    def loss_by_feat_single(self, obj_cls: Tensor, verb_cls: Tensor, sub_boxes: Tensor,
                            obj_boxes: Tensor, batch_gt: List[InstanceData],
                            batch_img_metas: List[dict], num_interactions: float,
                            flat_gt: Optional[dict] = None) -> tuple:
        """Losses of one decoder layer (B, Q, ...) after its own Hungarian matching
        (``flat_gt``: :meth:`_flat_targets` of the batch, computed here when not given)."""
        if flat_gt is None:
            flat_gt = self._flat_targets(batch_gt, batch_img_metas, obj_cls.dtype)
        results = self._assign(obj_cls.detach(), verb_cls.detach(), sub_boxes.detach(),
                               obj_boxes.detach(), batch_gt, batch_img_metas)
        labels, verbs, flat_pos, sub_t, obj_t, has_obj = self._targets(
            obj_cls, verb_cls, flat_gt, results)

        # object classification: weighted mean over all queries (no-object weight bg_cls_weight)
        num_pos = flat_pos.numel()
        cls_avg = max(num_pos + (labels.numel() - num_pos) * self.bg_cls_weight, 1.0)
        loss_obj_cls = self.loss_obj_cls(obj_cls.reshape(-1, self.num_obj_classes + 1), labels,
                                         avg_factor=cls_avg)

        verb_pred = verb_cls.reshape(-1, self.num_verb_classes)
        if self.verb_loss_on_probs:  # official modified focal loss / number of positive labels
            loss_verb_cls = self.loss_verb_cls(verb_pred.float().sigmoid(), verbs,
                                               avg_factor=max(float(verbs.eq(1).sum()), 1.0))
        else:
            loss_verb_cls = self.loss_verb_cls(verb_pred, verbs, avg_factor=verbs.numel())

        sub_pred = sub_boxes.reshape(-1, 4)[flat_pos]
        obj_pred = obj_boxes.reshape(-1, 4)[flat_pos]
        obj_w = has_obj.float()
        obj_avg = float(obj_w.sum()) + 1e-4
        loss_sub_bbox = self.loss_bbox(sub_pred, sub_t, avg_factor=num_interactions)
        loss_obj_bbox = self.loss_bbox(obj_pred, obj_t, weight=obj_w.unsqueeze(-1).expand_as(obj_t),
                                       avg_factor=obj_avg)
        loss_sub_iou = self.loss_iou(bbox_cxcywh_to_xyxy(sub_pred), bbox_cxcywh_to_xyxy(sub_t),
                                     avg_factor=num_interactions)
        loss_obj_iou = self.loss_iou(bbox_cxcywh_to_xyxy(obj_pred), bbox_cxcywh_to_xyxy(obj_t),
                                     weight=obj_w, avg_factor=obj_avg)
        return (loss_obj_cls, loss_verb_cls, loss_sub_bbox, loss_obj_bbox, loss_sub_iou,
                loss_obj_iou)

    # --------------------------------------------------------------------- inference
    def predict(self, hidden_states: Tensor, batch_data_samples: list,
                rescale: bool = True) -> List[InstanceData]:
        """Top-K HOI triplets per image (``pred_hoi`` of the data contract)."""
        obj_cls, verb_cls, sub_boxes, obj_boxes = self(hidden_states[-1:])
        topk = int(self.test_cfg.get('max_per_img', 100))
        results = []
        for i, sample in enumerate(batch_data_samples):
            meta = sample.metainfo
            scale = meta.get('scale_factor') if rescale else None
            if rescale and scale is None:
                raise KeyError('rescale=True needs `scale_factor` in the data sample metainfo')
            out = qpic_postprocess(obj_cls[-1, i], verb_cls[-1, i], sub_boxes[-1, i],
                                   obj_boxes[-1, i], meta['img_shape'], scale_factor=scale,
                                   corre=self.corre, topk=topk)
            results.append(InstanceData(**out))
        return results
