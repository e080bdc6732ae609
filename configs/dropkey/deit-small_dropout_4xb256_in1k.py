# The paper's Dropout baseline for DeiT-S: dropout on the attention *probabilities* (after the
# softmax, with rescaling) at the same ratio, in every block.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(backbone=dict(layer_cfgs=dict(attn_drop_rate=0.1)))

# bench_pipeline.py: 5.9 ms/sample x 256 / 0.25 s/iter -> 7 workers/GPU, +1 spare (mmpretrain: 5)
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True)
