from .hoi_assigner import (HOIBoxL1Cost, HOIClassCost, HOIGIoUCost, HOIHungarianAssigner, VerbCost,
                           hoi_box_l1_cost, hoi_giou_cost, hoi_obj_class_cost, hoi_verb_cost,
                           missing_object_mask)

__all__ = [
    'HOIBoxL1Cost', 'HOIClassCost', 'HOIGIoUCost', 'HOIHungarianAssigner', 'VerbCost',
    'hoi_box_l1_cost', 'hoi_giou_cost', 'hoi_obj_class_cost', 'hoi_verb_cost',
    'missing_object_mask'
]
