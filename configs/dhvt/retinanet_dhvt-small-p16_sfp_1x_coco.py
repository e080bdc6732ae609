# RetinaNet with a DHVT-S (patch 16) backbone on COCO, 1x schedule.
# DHVT returns one stride-16 map for any (also non-square) input; mmvitreg's ViTDet-style
# SimpleFeaturePyramid neck turns it into strides 8/16/32 (deconv / identity / max-pool, each
# followed by 1x1 + 3x3 convs) plus two stride-2 max-pooled levels (64, 128) for RetinaNet's P3-P7.
# Backbone weights: an ImageNet DHVT-S, e.g. trained with dhvt-small-p16_2xb128-300e_in1k.py or an
# official checkpoint converted by tools/model_converters/dhvt_to_mmvitreg.py. BatchNorm layers
# (SOPE, DAFF) keep their ImageNet statistics (norm_eval) because detection batches are small.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

pretrained = 'work_dirs/dhvt-small-p16_2xb128-300e_in1k/epoch_300.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='DHVT',
        arch='small',
        num_heads=6,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.'),
    ),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=384,
        out_channels=256,
        scale_factors=(2.0, 1.0, 0.5),
        num_outs=5,
    ),
)

# AdamW as usual for ViT detectors; no decay on norms, biases and the class token.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
