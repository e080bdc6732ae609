# The paper's Dropout baseline: attention-probability dropout (after softmax) at the same ratio.
_base_ = ['./vit-small-p4_1xb128-300e_cifar100.py']

model = dict(backbone=dict(layer_cfgs=dict(attn_drop_rate=0.1)))
