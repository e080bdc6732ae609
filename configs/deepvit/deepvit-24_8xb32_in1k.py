# "Pure" DeepViT with 24 blocks (dim 384, 12 heads, MLP ratio 3, patch 16, Re-attention in every
# block; official deepvit_patch16_224_re_attn_24b) on ImageNet-1k, official recipe
# (scripts/DeepViT_24B_pure_transformer.yaml: drop path 0.2, Mixup 0.8 / CutMix 1.0, fp32).
_base_ = ['./deepvit-s_8xb32_in1k.py']
model = dict(
    backbone=dict(arch='deepvit-24'),
    head=dict(in_channels=384),
)
