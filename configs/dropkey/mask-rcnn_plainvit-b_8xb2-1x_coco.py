# Plain ViT-B (ViTDet design: 14x14 windows, global attention in blocks 2/5/8/11, decomposed
# rel-pos, simple feature pyramid) + the stock mmdet Mask R-CNN heads, 1x schedule.
# ViTDet initialises from MAE ImageNet weights: set
#   model.backbone.init_cfg = dict(type='Pretrained', checkpoint=<MAE ViT-B/16 .pth>,
#                                  prefix='backbone.')
# (mmpretrain MAE/ViT key names match PlainViT's; the class-token position is dropped on load).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='PlainViT', arch='base', img_size=1024, patch_size=16,
                  window_size=14, use_rel_pos=True, drop_path_rate=0.1, out_indices=(-1, )),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=768, out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'pos_embed': dict(decay_mult=0.0),
                                    'rel_pos': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0))
