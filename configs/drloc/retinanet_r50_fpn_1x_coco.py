# Baseline for the DRLoc detection config: the stock mmdet RetinaNet R-50-FPN 1x COCO.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
