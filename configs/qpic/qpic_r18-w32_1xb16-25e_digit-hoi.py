# A small QPIC for digit HOI on a CPU core: ResNet-18 at width 32 to stride 8 (2 stages;
# 64x64 images give an 8x8 map), 2 encoder + 3 decoder layers of width 64, 8 queries; the QPIC
# heads, losses, Hungarian matching and HICO-DET metric unchanged, on the data set's own class
# table (11 box classes, 6 verbs). QPIC starts its whole detector from a COCO-trained DETR
# (configs/qpic/qpic_r50_8xb2-150e_hico.py: load_from the converted DETR); so does this one, from
# digits://detr-r18-w32-s8-digit-hoi (mmvitreg.models.digit_pretrained): a DETR of this shape
# trained 20 epochs on the boxes of the same training scenes (interactions unused; its backbone
# from digits://resnet18-w32-s8, a pretraining on digit crops), made once on first use (about
# 5 min on one core) and cached. Only the verb classifier starts from scratch. 25 epochs,
# validated with an exponential moving average of the weights (mmengine's EMAHook, decay 0.996
# per iteration: about the last 2 epochs; BN statistics averaged too). Not in QPIC's recipe: a
# deliberate change for a short CPU schedule (README, digit HOI).
#   OMP_NUM_THREADS=1 python tools/train.py configs/qpic/qpic_r18-w32_1xb16-25e_digit-hoi.py
_base_ = ['../_base_/models/qpic_r50.py', '../_base_/datasets/digit_hoi.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

embed_dims = 64
attn = dict(embed_dims=embed_dims, num_heads=4, dropout=0.0, batch_first=True)
ffn = dict(embed_dims=embed_dims, feedforward_channels=2 * embed_dims, num_fcs=2, ffn_drop=0.0,
           act_cfg=dict(type='ReLU', inplace=True))
model = dict(
    num_queries=8,
    data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3),
    backbone=dict(
        depth=18, base_channels=32, stem_channels=32, num_stages=2, out_indices=(1, ),
        strides=(1, 2), dilations=(1, 1), frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='digits://resnet18-w32-s8',
                      prefix='backbone.')),
    neck=dict(in_channels=[64], out_channels=embed_dims),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
    decoder=dict(num_layers=3,
                 layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(embed_dims=embed_dims, num_obj_classes=11, num_verb_classes=6),
    # 8 queries x 6 verbs = 48 triplets per image: all kept, no verb-object mask needed
    test_cfg=dict(max_per_img=100, corre=None))

max_epochs = 25
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.01, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', interval=max_epochs, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='EMAHook', momentum=0.004, update_buffers=True, priority='ABOVE_NORMAL')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='HOILocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=25, by_epoch=True)
log_level = 'INFO'
load_from = 'digits://detr-r18-w32-s8-digit-hoi'
resume = False
randomness = dict(seed=0)
