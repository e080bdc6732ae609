# DeepViT-L on ImageNet-1k with the official recipe (scripts/DeepViT_L_CNN_patch.yaml: drop path
# 0.2, as every DeepViT yaml). 32 blocks, dim 420, Re-attention in the last 12 blocks. 58.88M
# parameters. Record: docs/recipes/deepvit.md.
_base_ = ['./deepvit-s_8xb32_in1k.py']
model = dict(
    backbone=dict(arch='deepvit-l'),
    head=dict(in_channels=420),
)
