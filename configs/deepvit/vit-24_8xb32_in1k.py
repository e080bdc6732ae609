# Baseline for deepvit-24_8xb32_in1k.py: the same 24-block ViT (dim 384, 12 heads, MLP ratio 3,
# same init and recipe) with plain self-attention instead of Re-attention.
_base_ = ['./deepvit-24_8xb32_in1k.py']
model = dict(backbone=dict(reattention=False))
