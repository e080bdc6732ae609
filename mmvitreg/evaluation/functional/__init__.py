"""Pure numpy evaluation cores (no mmengine state)."""
from .hico_io import (HICOFile, dets_from_file, dets_from_triplets, format_summary, gt_from_file,
                      gt_from_images, read_hico_file, write_per_class_ap)
from .hoi_eval import (AP_METHODS, EVAL_MODES, HOIDetections, HOIEvalResult, HOIGroundTruth,
                       average_precision, evaluate_hoi, match_detections, pair_iou, topk_per_image)

__all__ = ['AP_METHODS', 'EVAL_MODES', 'HOIDetections', 'HOIEvalResult', 'HOIGroundTruth',
           'average_precision', 'evaluate_hoi', 'match_detections', 'pair_iou',
           'topk_per_image', 'HICOFile', 'read_hico_file', 'gt_from_file', 'dets_from_file',
           'gt_from_images', 'dets_from_triplets', 'format_summary', 'write_per_class_ap']
