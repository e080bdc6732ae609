# Baseline for deepvit-32_8xb32_in1k.py: the same 32-block ViT (dim 384, 12 heads, MLP ratio 3,
# same init and recipe, including the 32B recipe's Mixup 0.1 / no CutMix, AMP and the
# `attention_cosine` loss, which applies to plain attention maps too) with plain self-attention
# instead of Re-attention, so that Re-attention is the only difference.
_base_ = ['./deepvit-32_8xb32_in1k.py']
model = dict(backbone=dict(reattention=False))
