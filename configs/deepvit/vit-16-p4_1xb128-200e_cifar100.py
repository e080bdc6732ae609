# From-scratch ViT-16 (16 blocks, dim 384, 12 heads, MLP ratio 3) on CIFAR-100 at 32x32 with
# 4x4 patches (64 tokens), stock mmpretrain VisionTransformer. Baseline of
# vit-16-p4-reattention_1xb128-200e_cifar100.py. (Not an official DeepViT recipe: the paper
# reports ImageNet only.)
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=384, num_layers=16, num_heads=12, feedforward_channels=1152),
        img_size=32,
        patch_size=4,
        drop_path_rate=0.1,
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
                  dict(type='Constant', layer='LayerNorm', val=1., bias=0.)],
    ),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
train_dataloader = dict(batch_size=128, num_workers=4)
val_dataloader = dict(batch_size=256, num_workers=4)
test_dataloader = val_dataloader
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.002, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=200,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=5)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)
# cross-layer attention similarity (DeepViT Eq. 4) after every 4th validation
custom_hooks = [dict(type='AttentionCollapseHook', num_batches=2, interval=4)]
