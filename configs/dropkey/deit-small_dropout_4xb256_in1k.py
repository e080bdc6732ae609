# The paper's Dropout baseline for DeiT-S: dropout on the attention *probabilities* (after the
# softmax, with rescaling) at the same ratio, in every block.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(backbone=dict(layer_cfgs=dict(attn_drop_rate=0.1)))
