# CPU default for object detection (no download): DropKey vs Dropout vs none in DETR-R18 (stock
# mmdet config, trained from scratch: no ImageNet weights) on a generated COCO-format data set of
# coloured rectangles (mmvitreg.testing.make_coco_dataset, written on first use), 128 px images,
# 20 short epochs:
#   python tools/benchmark_regularizers.py configs/benchmark/coco_mini_detr_dropkey.py
# DETR needs far longer schedules to reach a useful mAP: this preset checks that the detection
# path (train, test, COCO bbox mAP parsing) works on a CPU; compare methods with coco_detr_dropkey.py.
base = 'mmdet::detr/detr_r18_8xb2-500e_coco.py'
seeds = [0, 1]
metrics = ['coco/bbox_mAP', 'coco/bbox_mAP_50']
baseline = 'dropout'
_ROOT = 'data/coco_mini/'
prepare = [dict(fn='mmvitreg.testing.make_coco_dataset',
                kwargs=dict(root=_ROOT, num_train=64, num_val=16, image_size=(96, 128)),
                skip_if_exists=_ROOT + 'annotations/instances_val2017.json')]
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
cfg_options = {
    'model.backbone.init_cfg': None,  # from scratch, no download
    'train_dataloader.batch_size': 4,
    'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'train_dataloader.dataset.data_root': _ROOT,
    'train_dataloader.dataset.pipeline': _TRAIN_PIPELINE,
    'val_dataloader.num_workers': 0,
    'val_dataloader.persistent_workers': False,
    'val_dataloader.dataset.data_root': _ROOT,
    'val_dataloader.dataset.pipeline': _TEST_PIPELINE,
    'test_dataloader.num_workers': 0,
    'test_dataloader.persistent_workers': False,
    'test_dataloader.dataset.data_root': _ROOT,
    'test_dataloader.dataset.pipeline': _TEST_PIPELINE,
    'val_evaluator.ann_file': _ROOT + 'annotations/instances_val2017.json',
    'test_evaluator.ann_file': _ROOT + 'annotations/instances_val2017.json',
    'train_cfg.max_epochs': _EPOCHS,
    'train_cfg.val_interval': 5,
    'param_scheduler': [dict(type='MultiStepLR', begin=0, end=_EPOCHS, by_epoch=True,
                             milestones=[16], gamma=0.1)],
    'default_hooks.checkpoint': dict(type='CheckpointHook', interval=_EPOCHS, max_keep_ckpts=1),
    'default_hooks.logger.interval': 8,
}
_NO_ATTN_DROPOUT = {
    'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.0,
}
variants = dict(
    dropout=dict(description='stock DETR: attention-weight dropout 0.1'),
    none=dict(cfg_options=_NO_ATTN_DROPOUT),
    dropkey_decrease=dict(cfg_options={**_NO_ATTN_DROPOUT, 'model.type': 'Regularized',
                                       'model.host': 'DETR',
                                       'model.dropkey': dict(ratio=0.1, schedule='decrease')}),
)
