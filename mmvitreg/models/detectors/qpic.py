"""QPIC: query-based pairwise HOI detection (Tamura et al., CVPR 2021) on mmdet's DETR.

The paper's network *is* DETR -- CNN backbone (ResNet-50 C5) -> 1x1 projection -> transformer
encoder (6 layers) -> decoder (6 layers, 100 learned queries, width 256, 8 heads) -- with the
box/class head replaced by an interaction head (:class:`~mmvitreg.models.heads.QPICHead`). So
:class:`QPIC` is mmdet's :class:`~mmdet.models.DETR` unchanged up to the decoder (same
``DetrTransformerEncoder``/``DetrTransformerDecoder``, ``SinePositionalEncoding``, padding mask
and parameter names, hence COCO-DETR checkpoints load with ``load_from``) and differs only in
what ``predict`` attaches to the data samples: ``pred_hoi`` (the HOI data contract in
docs/DESIGN.md) instead of ``pred_instances``.

Regularizers (DropKey on the encoder/decoder attentions, DRLoc on the feature map) are switched on
with the ``Regularized`` wrapper, e.g. ``model = dict(type='Regularized', host='QPIC',
dropkey=dict(...), **qpic_kwargs)``; the attentions are mmcv ``MultiheadAttention`` modules and
``loss(inputs, data_samples)`` has mmdet's signature.
"""
from mmdet.models.detectors import DETR
from mmdet.structures import SampleList
from torch import Tensor

from mmvitreg.registry import MODELS

__all__ = ['QPIC']


@MODELS.register_module()
class QPIC(DETR):
    """DETR-based HOI detector; all arguments are those of mmdet's ``DETR``.

    ``bbox_head`` must be an interaction head such as ``QPICHead`` (its ``predict`` returns
    one ``InstanceData`` of HOI triplets per image).
    """

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Attach ``pred_hoi`` (top-K triplets, original-image boxes) to each data sample."""
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats, batch_data_samples)
        results = self.bbox_head.predict(**head_inputs_dict, rescale=rescale,
                                         batch_data_samples=batch_data_samples)
        for sample, result in zip(batch_data_samples, results):
            sample.pred_hoi = result
        return batch_data_samples
