# The official DRLoc schedule (yhlleo/VTs-Drloc main.py + lr_scheduler.py), shared by the DRLoc
# classification configs: Swin's AdamW recipe (mmpretrain's imagenet_bs1024_adamw_swin: lr 1e-3 at
# total batch 1024), and the loop trains epochs 0..100 (101 epochs) of a 300-epoch timm cosine
# (TRAIN.EPOCHS = --total_epochs = 300, 20 warm-up epochs from 1e-6, min lr 1e-5, updated every
# iteration). timm's cosine clock starts at step 0 (warm-up only overrides its first 20 epochs),
# hence OffsetCosineAnnealingLR with offset=20:
# lr(t) = 1e-5 + (1e-3 - 1e-5) * (1 + cos(pi * t / 300)) / 2, ~0.75e-3 at the end.
_base_ = ['mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='OffsetCosineAnnealingLR', T_max=300, offset=20, eta_min=1e-5, by_epoch=True,
         begin=20, end=101, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=101, val_interval=1)
