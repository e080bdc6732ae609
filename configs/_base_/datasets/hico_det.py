# HICO-DET (JSON release of the transformer HOI detectors), QPIC-style pipelines.
# Layout under data_root: annotations/{trainval_hico,test_hico}.json, images/{train,test}2015/.
# Image normalisation (ImageNet mean/std, RGB) belongs to the model's DetDataPreprocessor:
#   data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
#                          std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=1)
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)
default_scope = 'mmdet'

dataset_type = 'HICODetDataset'
data_root = 'data/hico_20160224_det/'
backend_args = None

# DETR / QPIC multi-scale training: shorter side in 480..800 (longer <= 1333), or resize to
# 400/500/600 + random 384..600 crop + multi-scale resize; horizontal flip; colour jitter 0.4.
# CleanHOIAnnotations is the official training-annotation cleaning (qpic datasets/hico.py):
# boxes clamped to the image, zero-area/inverted boxes dropped with the HOIs using them, and at
# most num_queries (100) pairs per image -- officially the *boxes* are truncated at num_queries
# (qpic issue #37); max_boxes=100, max_pairs=None reproduces that exactly.
train_scales = [(s, 1333) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadHOIAnnotations'),
    dict(type='CleanHOIAnnotations', max_pairs=100),  # = the model's num_queries
    dict(type='RandomFlip', prob=0.5),
    # torchvision's ColorJitter(.4, .4, .4) as QPIC applies it on PIL images (random order,
    # factors uniform in [0.6, 1.4], PIL's blends within a level per step), vectorised: ~0.4x
    # torchvision's time, ~0.2x mmpretrain.ColorJitter(backend='cv2')'s (bench_pipeline.py)
    dict(type='TorchvisionColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='HOIRandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackHOIInputs'),
]
# GT is loaded after the resize so that it stays in original image coordinates (the metric
# reads the raw GT kept by the dataset in test mode anyway).
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadHOIAnnotations'),
    dict(type='PackHOIInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/trainval_hico.json',
        data_prefix=dict(img='images/train2015/'),
        invalid_hoi='skip_image',  # as QPIC: the public trainval json has a few broken entries
        # as QPIC (datasets/hico.py): images without HOIs (or whose pairs the crop removes)
        # stay in training, all queries then learn "no interaction"; True would drop them
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/test_hico.json',
        data_prefix=dict(img='images/test2015/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# Official protocol (Default + Known Object, Full/Rare/Non-rare); mode='qpic' reproduces QPIC.
val_evaluator = dict(type='HICODetMetric', mode='official')
test_evaluator = val_evaluator
