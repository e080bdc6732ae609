# CPU preset for object detection (no download): DETR-R18 (stock mmdet config, trained from
# scratch: no ImageNet weights) on a generated COCO-format data set of coloured rectangles
# (mmvitreg.testing.make_coco_dataset, written on first use), 128 px images, 20 short epochs.
#   python tools/benchmark_regularizers.py configs/benchmark/coco_mini_detr_dropkey.py --jobs 2
# The variants apply the project's DETR recipes unchanged: `dropkey` is what
# configs/dropkey/detr_r50_dropkey_coco.py changes relative to its base (a decreasing schedule
# restarted in each attention group, stock attention dropout 0.1 kept). DETR needs far longer
# schedules to reach a useful mAP: this checks the detection path on a CPU; compare methods with
# coco_detr_dropkey.py.
_base_ = ['mmdet::detr/detr_r18_8xb2-500e_coco.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

_ROOT = 'data/coco_mini/'
_EPOCHS = 20
_TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs'),
]
_TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_LOADER = dict(num_workers=0, persistent_workers=False)
model = dict(backbone=dict(init_cfg=None))  # from scratch, no download
train_dataloader = dict(batch_size=4, **_LOADER,
                        dataset=dict(data_root=_ROOT, pipeline=_TRAIN_PIPELINE))
val_dataloader = dict(**_LOADER, dataset=dict(data_root=_ROOT, pipeline=_TEST_PIPELINE))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=_ROOT + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=_EPOCHS, val_interval=5)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=_EPOCHS, by_epoch=True,
                        milestones=[16], gamma=0.1)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=_EPOCHS, max_keep_ckpts=1),
                     logger=dict(interval=8))

benchmark = dict(
    seeds=[0, 1],
    metrics=['coco/bbox_mAP', 'coco/bbox_mAP_50'],
    baseline='baseline',
    prepare=[dict(fn='mmvitreg.testing.make_coco_dataset',
                  kwargs=dict(root=_ROOT, num_train=64, num_val=16, image_size=(96, 128)),
                  skip_if_exists=_ROOT + 'annotations/instances_val2017.json')],
    variants=dict(
        baseline=dict(description='stock DETR: attention-weight dropout 0.1'),
        dropkey=dict(description='+ DropKey as in configs/dropkey/detr_r50_dropkey_coco.py',
                     recipe='../dropkey/detr_r50_dropkey_coco.py'),
        none=dict(description='attention-weight dropout off',
                  cfg_options={'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.0,
                               'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.0,
                               'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.0}),
    ))
