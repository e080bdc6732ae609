# "Pure" DeepViT with 16 blocks (dim 384, 12 heads, MLP ratio 3, patch 16, Re-attention in every
# block; official deepvit_patch16_224_re_attn_16b) on ImageNet-1k. The official repo ships no yaml
# for 16B: this uses the recipe shared by its S/L/24B yamls (drop path 0.2, Mixup 0.8 / CutMix 1.0).
_base_ = ['./deepvit-s_8xb32_in1k.py']
model = dict(
    backbone=dict(arch='deepvit-16'),
    head=dict(in_channels=384),
)
