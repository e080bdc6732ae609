# ViT-S (384-d, 12 blocks, 6 heads) with 4x4 patches on 32x32 CIFAR-100 (8x8 = 64 tokens + cls),
# trained from scratch with the DeiT recipe (AdamW, cosine, 300 epochs, label smoothing).
# Baseline for the DropKey / Dropout variants in this folder.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='VisionTransformer', arch='deit-small', img_size=32, patch_size=4,
                  drop_path_rate=0.1),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=100, in_channels=384,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02),
              dict(type='Constant', layer='LayerNorm', val=1., bias=0.)],
)
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 128 / 512),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0),
                                    '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0),
)
auto_scale_lr = dict(base_batch_size=128)
