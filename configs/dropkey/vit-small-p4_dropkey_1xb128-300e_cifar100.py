# ViT-S/4 on CIFAR-100 with DropKey: ratio 0.1 -> 0 with depth (paper default schedule).
_base_ = ['./vit-small-p4_1xb128-300e_cifar100.py']

model = dict(
    backbone=dict(
        type='Regularized',
        host='VisionTransformer',
        dropkey=dict(ratio=0.1, schedule='decrease', variant='random')))
