"""Pure numpy evaluation cores (no mmengine state)."""
from .hoi_eval import (AP_METHODS, EVAL_MODES, HOIDetections, HOIEvalResult, HOIGroundTruth,
                       average_precision, evaluate_hoi, match_detections, pair_iou,
                       topk_per_image)

__all__ = ['AP_METHODS', 'EVAL_MODES', 'HOIDetections', 'HOIEvalResult', 'HOIGroundTruth',
           'average_precision', 'evaluate_hoi', 'match_detections', 'pair_iou',
           'topk_per_image']
