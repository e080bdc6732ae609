# The official DeepViT ImageNet recipe (zhoudaquan/dvit_repo scripts/*.yaml with its bundled
# timm train.py): AdamW, lr 5e-4 at a total batch of 256 (no linear scaling), weight decay 0.05, eps 1e-8,
# no gradient clipping, model EMA 0.99996. LR: timm CosineLRScheduler(t_initial=300,
# warmup_t=5, warmup_lr_init=1e-6, lr_min=1e-5, cycle_limit=1, t_in_epochs=True), i.e. one value
# per epoch: warm-up 1e-6 + e * (5e-4 - 1e-6) / 5 for e < 5, then a cosine whose clock starts at
# epoch 0, 1e-5 + (5e-4 - 1e-5) * (1 + cos(pi * e / 300)) / 2, and 10 cool-down epochs at 1e-5
# (cooldown_epochs: 10), so training runs 310 epochs. Record: docs/recipes/deepvit.md.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
)
param_scheduler = [
    # end=6 with begin=0: LinearLR's 5 steps give e / 5 at epochs 0..4 (timm's warm-up); at
    # epoch 5 the cosine below overrides it
    dict(type='LinearLR', start_factor=1e-6 / 5e-4, by_epoch=True, begin=0, end=6),
    dict(type='OffsetCosineAnnealingLR', T_max=300, offset=5, eta_min=1e-5, by_epoch=True,
         begin=5, end=310),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
