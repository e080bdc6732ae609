# QPIC-R50 on HICO-DET, official schedule (hitachi-rd-cv/qpic): AdamW lr 1e-4 (backbone 1e-5),
# weight decay 1e-4, 150 epochs with the lr divided by 10 after epoch 100, gradient clipping
# 0.1, DETR multi-scale augmentation (+ colour jitter), initialised from COCO-trained DETR-R50.
#
# Batch size: 8 GPUs x 2 images = 16 in total (`8xb2`). With another GPU count keep the total
# at 16 (e.g. 4 GPUs: train_dataloader.batch_size=4) or pass --auto-scale-lr to scale the lr
# linearly from the base batch of 16 (the paper did not tune other sizes).
#   bash tools/dist_train.sh configs/qpic/qpic_r50_8xb2-150e_hico.py 8
#   python tools/test.py configs/qpic/qpic_r50_8xb2-150e_hico.py work_dirs/.../epoch_150.pth
_base_ = [
    '../_base_/models/qpic_r50.py',
    '../_base_/datasets/hico_det.py',  # sets default_scope = 'mmdet'
]
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

# runtime: mmdet's default_runtime.py (inlined: it would set default_scope a second time)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3,
                    save_best='hico/mAP', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
resume = False

# COCO DETR-R50 (mmdet 3.x). QPICHead maps DETR's class layer to the object classifier and its
# box MLP to both the subject and the object MLP (as QPIC's convert_parameters.py); the verb
# classifier starts from scratch.
load_from = ('https://download.openmmlab.com/mmdetection/v3.0/detr/'
             'detr_r50_8xb2-150e_coco/detr_r50_8xb2-150e_coco_20221023_153551-436d03e8.pth')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0)}))

max_epochs = 150
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[100],
         gamma=0.1)
]
# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
