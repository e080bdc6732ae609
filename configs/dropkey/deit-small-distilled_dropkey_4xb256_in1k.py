# Distilled DeiT-S (class + distillation tokens) with DropKey; extra tokens are keys like any
# other for the random variant.
_base_ = ['mmpretrain::deit/deit-small-distilled_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='Regularized',
        host='DistilledVisionTransformer',
        dropkey=dict(ratio=0.1, schedule='decrease')))
