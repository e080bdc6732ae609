# DeiT-S on ImageNet-1k with DropKey (Li et al., CVPR 2023): the stock mmpretrain DeiT-S recipe,
# only the backbone type changes. Per-layer ratio decreases linearly from 0.1 (first block) to 0
# (last block), random (i.i.d.) key masking before the softmax; nothing changes at test time.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='Regularized',
        host='VisionTransformer',
        dropkey=dict(ratio=0.1, schedule='decrease', min_ratio=0.0, variant='random')))

# bench_pipeline.py: 5.9 ms/sample x 256 / 0.25 s/iter -> 7 workers/GPU, +1 spare (mmpretrain: 5)
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True)
