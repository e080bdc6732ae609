# DHVT-T (patch 16, 192-d, 3 heads) on ImageNet-1k 224x224, official recipe (ArieSeirack/DHVT
# run_code_imn.sh + main.py defaults): 2 GPUs x 128 images, AdamW lr 2.5e-4 (= 5e-4 x 256 / 512),
# wd 0.05, 10 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs, drop path 0.1, DeiT
# augmentation (mmpretrain's imagenet_bs64_swin_224 pipeline: bicubic RandomResizedCrop, flip,
# RandAugment m9-mstd0.5, random erasing 0.25; Mixup 0.8 / CutMix 1.0, label smoothing 0.1),
# repeated augmentation (3 repeats), EMA 0.99996. Use --auto-scale-lr with more GPUs.
# Same deliberate EMA/cosine differences as the CIFAR configs (see dhvt-tiny-p4 CIFAR config).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DHVT',
        arch='tiny',
        num_heads=3,  # official ImageNet models: 3 (tiny) / 6 (small) heads
        patch_size=16,
        drop_path_rate=0.1,
        sope_norm_cfg=dict(type='SyncBN'),
    ),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # official init of the classifier: trunc-normal std 0.02, bias 0 (not mmpretrain's zeros)
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=3),
)
val_dataloader = dict(batch_size=192, num_workers=8, persistent_workers=True)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2.5e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0)}),
)
param_scheduler = [
    # timm's warm-up: 1e-6 + e * (2.5e-4 - 1e-6) / 10 at epochs 0..9; LinearLR spans
    # end - begin - 1 steps, so end=11; from epoch 10 the cosine below overrides it
    dict(type='LinearLR', start_factor=4e-3, by_epoch=True, begin=0, end=11),
    dict(type='OffsetCosineAnnealingLR', T_max=300, offset=10, eta_min=1e-5, by_epoch=True,
         begin=10, end=300),  # timm: one cosine over 0..300, the warm-up overrides 0..10
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)

custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=3,
                                     save_best='auto'))
randomness = dict(seed=0, deterministic=False)
