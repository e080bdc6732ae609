# DHVT-T (patch 4) trained from scratch on CIFAR-100, official recipe (ArieSeirack/DHVT,
# run_code_cifar.sh + main.py defaults): 2 GPUs x 256 images, AdamW lr 1e-3 (= 1e-3 x 512 / 512),
# wd 0.05, 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs, drop path 0.1, DeiT augmentation
# (RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing
# 0.1), repeated augmentation (3 repeats), EMA 0.99996. 32x32 inputs: RandomCrop(32, pad 4) + flip
# replace the random resized crop, images normalised with the ImageNet mean/std.
# Deliberate differences: the official code evaluates the raw weights and keeps the EMA copy on the
# side, mmengine's EMAHook validates with the EMA weights. The cosine spans all 300 epochs with the
# warm-up overriding its first 5, as timm's scheduler (OffsetCosineAnnealingLR).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DHVT',
        arch='tiny',  # 192-d, 12 layers, 4 heads
        patch_size=4,
        drop_path_rate=0.1,
        sope_norm_cfg=dict(type='SyncBN'),  # official: SyncBatchNorm in SOPE, BatchNorm2d in DAFF
    ),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # official: the classifier `head` is initialised like every other Linear (timm
        # _init_vit_weights via self.apply: trunc-normal std 0.02, bias 0); mmpretrain's
        # VisionTransformerClsHead would zero-initialise it.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# ---------------------------------------------------------------- data (CIFAR-100, RGB arrays)
dataset_type = 'CIFAR100'
data_preprocessor = dict(
    num_classes=100,
    mean=[123.675, 116.28, 103.53],  # timm IMAGENET_DEFAULT_MEAN/STD, as the official transform
    std=[58.395, 57.12, 57.375],
    to_rgb=False,  # mmpretrain's CIFAR datasets already yield RGB
)
rgb_mean, rgb_std = data_preprocessor['mean'], data_preprocessor['std']
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in rgb_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=rgb_mean, fill_std=rgb_std),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root='data/cifar100', split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=3),
)
val_dataloader = dict(
    batch_size=384,  # official: 1.5 x the training batch
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root='data/cifar100', split='test',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
# timm create_optimizer: no weight decay for 1-D parameters (norms, biases) and the class token.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0)}),
)
param_scheduler = [  # stepped per epoch, as timm's scheduler in the official code
    # timm's warm-up: 1e-6 + e * (1e-3 - 1e-6) / 5 at epochs 0..4 (8.0e-4 at epoch 4); LinearLR
    # spans end - begin - 1 steps, so end=6; from epoch 5 the cosine below overrides it
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=6),
    dict(type='OffsetCosineAnnealingLR', T_max=300, offset=5, eta_min=1e-5, by_epoch=True,
         begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)  # lr 1e-3 at 2 x 256 images

custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]  # decay 0.99996
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=3,
                                     save_best='auto'))
randomness = dict(seed=0, deterministic=False)
