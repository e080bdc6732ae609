# A ViT detector for digit scenes on a CPU core: a ViTDet-style plain ViT (PlainViT, 6 blocks of
# width 128, 4 heads, global attention) on an 8x8 token grid from a convolutional stem (stride 8;
# Xiao et al. 2021), ViTDet's simple feature pyramid (strides 4/8/16) and an FCOS head (centre
# sampling, GIoU, centre-ness on the regression branch). As ViTDet starts from an ImageNet (MAE)
# backbone, the ViT starts from digits://plainvit-t-p8 (mmvitreg.models.digit_pretrained: a
# pretraining on digit crops of the training glyphs, made once on first use and cached, about
# 2 min on one core); neck and head train from scratch.
# DropKey applies to the ViT's attention, DRLoc to its token grid (configs/benchmark/).
#   OMP_NUM_THREADS=1 python tools/train.py configs/vit/fcos_plainvit-t-p8_1xb16-3e_digit-scenes.py
_base_ = ['mmdet::_base_/default_runtime.py', '../_base_/datasets/digit_scenes.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

embed_dims = 128
model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3,
                           bgr_to_rgb=True, pad_size_divisor=16),
    backbone=dict(
        type='PlainViT',
        arch=dict(embed_dims=embed_dims, num_layers=6, num_heads=4,
                  feedforward_channels=2 * embed_dims, global_attn_indexes=(0, 1, 2, 3, 4, 5)),
        img_size=64, patch_size=8, conv_stem=(32, 64, 128), pretrain_img_size=64,
        window_size=0, use_rel_pos=False, drop_path_rate=0.1, out_indices=(-1, ),
        init_cfg=dict(type='Pretrained', checkpoint='digits://plainvit-t-p8',
                      prefix='backbone.')),
    neck=dict(type='SimpleFeaturePyramid', in_channels=embed_dims, out_channels=64,
              scale_factors=(2.0, 1.0, 0.5), num_outs=3),
    bbox_head=dict(
        type='FCOSHead', num_classes=10, in_channels=64, feat_channels=64, stacked_convs=2,
        strides=[4, 8, 16], regress_ranges=((-1, 12), (12, 24), (24, 1e8)),
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        norm_on_bbox=True, centerness_on_reg=True, center_sampling=True,
        center_sample_radius=1.5, conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))

max_epochs = 3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.01, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=25)
randomness = dict(seed=0)
