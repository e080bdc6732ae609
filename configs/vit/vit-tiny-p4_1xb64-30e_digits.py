# From-scratch ViT-Tiny (96-d, 6 layers) on scikit-learn's digits: the project's CPU demo model.
_base_ = [
    '../_base_/models/vit-tiny-p4_32px.py',
    '../_base_/datasets/digits_32px.py',
    '../_base_/schedules/adamw_cosine_30e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1, save_best='auto'),
)
randomness = dict(seed=0, deterministic=False)
