# Distilled DeiT-S (class + distillation tokens) with DropKey; extra tokens are keys like any
# other for the random variant.
_base_ = ['mmpretrain::deit/deit-small-distilled_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='Regularized',
        host='DistilledVisionTransformer',
        dropkey=dict(ratio=0.1, schedule='decrease')))

# bench_pipeline.py: 5.9 ms/sample x 256 / 0.25 s/iter -> 7 workers/GPU, +1 spare (mmpretrain: 5)
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True)
