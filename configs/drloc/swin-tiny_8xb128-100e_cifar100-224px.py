# Baseline for DRLoc: Swin-T trained from scratch on CIFAR-100 at 224 px for the paper's
# "100 epochs" (official loop: epochs 0..100 of a 300-epoch schedule,
# _base_/schedule_adamw_101-of-300e.py). Official DRLoc recipe = Swin's: AdamW, lr 1e-3 at total batch 1024, 20 warm-up epochs, cosine, Mixup 0.8 / CutMix 1.0,
# label smoothing 0.1, gradient clipping 5, drop path 0.2. Record: docs/recipes/drloc.md.
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/tiny_224.py',
    './_base_/cifar100_bs128_224px.py',
    './_base_/schedule_adamw_101-of-300e.py',  # the official 101-of-300-epoch schedule
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(head=dict(num_classes=100))
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=2,
                                     save_best='auto'))
