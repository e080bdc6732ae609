# "Pure" DeepViT with 32 blocks (dim 384, 12 heads, MLP ratio 3, patch 16, Re-attention in every
# block; official deepvit_patch16_224_re_attn_32b) on ImageNet-1k, official recipe
# (scripts/DeepViT_32B_pure_transformer.yaml): drop path 0.2, Mixup 0.1 and no CutMix, AMP (fp16
# with dynamic loss scaling; on a CPU pass --cfg-options optim_wrapper.type=AutocastOptimWrapper),
# and cos_reg_component: 12, the SoftTargetCrossEntropyCosReg loss: 0.1 times the cosine similarity
# (over heads) of the attention maps of blocks i and i + 1, averaged over i = 0..11
# (`attention_cosine`, mmvitreg/ops/attention_cosine.py). Record: docs/recipes/deepvit.md.
_base_ = ['./deepvit-s_8xb32_in1k.py']
model = dict(
    type='Regularized',
    host='ImageClassifier',
    attention_cosine=dict(weight=0.1, component=12),
    backbone=dict(arch='deepvit-32'),
    head=dict(in_channels=384),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.1)]),
)
optim_wrapper = dict(type='AmpOptimWrapper')
