# DeepViT-S on ImageNet-1k with the official recipe (scripts/DeepViT_S_CNN_patch.yaml; 8 GPUs x 32
# images). 27.31M parameters. Record: docs/recipes/deepvit.md.
_base_ = [
    '../_base_/models/deepvit-s_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/deepvit_adamw_300e_in1k.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
# the official models normalise with mean = std = 0.5 (timm default_cfgs of DeepViT); timm's
# RandAugment pads with that mean (128) and RandomErasing ('pixel') fills with N(0, 1) after
# normalisation, i.e. N(127.5, 127.5) in pixels here (clipped to the pixel range)
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[128, 128, 128], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=[127.5, 127.5, 127.5], fill_std=[127.5, 127.5, 127.5]),
    dict(type='PackInputs'),
]
# official eval: crop_pct 0.9 -> resize the short side to int(224 / 0.9) = 248, centre crop 224
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
