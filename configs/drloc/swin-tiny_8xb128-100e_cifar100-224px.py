# Baseline for DRLoc: Swin-T trained from scratch on CIFAR-100 at 224 px for 100 epochs
# (official DRLoc recipe = Swin's: AdamW, lr 1e-3 at total batch 1024, 20 warm-up epochs, cosine,
# Mixup/CutMix, label smoothing 0.1, gradient clipping 5).
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/tiny_224.py',
    './_base_/cifar100_bs128_224px.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(head=dict(num_classes=100))
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2,
                                     save_best='auto'))
