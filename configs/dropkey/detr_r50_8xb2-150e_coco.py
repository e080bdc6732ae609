# Stock mmdet DETR-R50 (150 epochs), the baseline of detr_r50_dropkey_8xb2-150e_coco.py.
_base_ = ['mmdet::detr/detr_r50_8xb2-150e_coco.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
