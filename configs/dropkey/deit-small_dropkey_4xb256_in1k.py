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
