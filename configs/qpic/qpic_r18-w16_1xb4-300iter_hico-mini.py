# Tiny QPIC for CPU tests and demos on a generated HICO-format dataset
# (mmvitreg.testing.make_hico_dataset): a narrow ResNet-18 (16 base channels, 3 stages, stride
# 16, trained from scratch), 1 encoder + 2 decoder layers of width 64, 10 queries, 128 px images.
# The full HICO-DET heads (80 objects, 117 verbs), losses, matching and metric are unchanged.
#
# Point it at generated data with (each split has its own data_root):
#   python tools/train.py configs/qpic/qpic_r18-w16_1xb4-300iter_hico-mini.py --cfg-options \
#       train_dataloader.dataset.dataset.data_root=DATA \
#       val_dataloader.dataset.data_root=DATA test_dataloader.dataset.data_root=DATA
_base_ = ['./qpic_r50_8xb2-150e_hico.py']

data_root = 'data/hico_mini/'
load_from = None
embed_dims = 64
attn = dict(embed_dims=embed_dims, num_heads=4, dropout=0.0, batch_first=True)
ffn = dict(embed_dims=embed_dims, feedforward_channels=128, num_fcs=2, ffn_drop=0.0,
           act_cfg=dict(type='ReLU', inplace=True))
model = dict(
    num_queries=10,
    backbone=dict(
        depth=18, base_channels=16, stem_channels=16, num_stages=3, out_indices=(2, ),
        strides=(1, 2, 2), dilations=(1, 1, 1), frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64], out_channels=embed_dims),
    encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
    decoder=dict(num_layers=2,
                 layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(embed_dims=embed_dims))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHOIAnnotations'),
    dict(type='CleanHOIAnnotations', max_pairs=10),  # = num_queries
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackHOIInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadHOIAnnotations'),
    dict(type='PackHOIInputs'),
]
# RepeatDataset: mmengine pauses 2 s whenever an iteration-based loop restarts its data
# iterator, which would dominate the step time of a dataset of a few dozen images.
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=1000,
        dataset=dict(
            type='HICODetDataset',
            data_root=data_root,
            ann_file='annotations/trainval_hico.json',
            data_prefix=dict(img='images/train2015/'),
            filter_cfg=dict(filter_empty_gt=False),  # as QPIC: images without HOIs train too
            pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[int(max_iters * 0.8)], gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_best=None))
log_processor = dict(by_epoch=False, window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=4)
