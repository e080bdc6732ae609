# DeepViT-S on ImageNet-1k with the official recipe (8 GPUs x 32 images). 27.31M parameters.
_base_ = [
    '../_base_/models/deepvit-s_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/deepvit_adamw_300e_in1k.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
# the official models normalise with mean = std = 0.5 (timm default_cfgs of DeepViT)
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
