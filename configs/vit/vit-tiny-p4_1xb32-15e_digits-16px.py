# From-scratch ViT-Tiny (96-d, 6 layers, 3 heads, 16 tokens) on scikit-learn's digits at 16x16:
# the project's CPU demo model (~40 s per training run on 2 cores, ~87% top-1 after 15 epochs).
_base_ = [
    '../_base_/models/vit-tiny-p4_16px.py',
    '../_base_/datasets/digits_16px.py',
    '../_base_/schedules/adamw_cosine_15e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='SafeCheckpointHook', interval=5, max_keep_ckpts=1, save_best='auto'),
)
randomness = dict(seed=0, deterministic=False)
