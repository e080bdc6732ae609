# Baseline for DRLoc: DeiT-Small trained from scratch on CIFAR-100 at 224 px for the DRLoc paper's
# "100 epochs" (the official loop runs epochs 0..100: _base_/schedule_adamw_101-of-300e.py).
# The official recipe is Swin's: AdamW, lr 1e-3 at total batch 1024, 20 warm-up epochs, cosine,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, clip 5. DeiT is not one of the paper's models: this pair follows the T2T
# settings (lambda 0.1, final tokens pooled to 7x7). Record: docs/recipes/drloc.md.
_base_ = [
    './_base_/cifar100_bs128_224px.py',
    './_base_/schedule_adamw_101-of-300e.py',  # the official 101-of-300-epoch schedule
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16,
                  drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0),
)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=2,
                                     save_best='auto'))
