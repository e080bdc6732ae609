# Digit scenes (mmvitreg.datasets.digit_scenes): 2-5 handwritten digits of 9-26 px per 64x64
# canvas, with clutter strokes, noise and partial overlaps; 10 classes; COCO layout generated on
# first use into data/digit_scenes/ (fixed seed; about 10 s). Test scenes use only the test
# glyphs of scikit-learn's digits. Evaluated with mmdet's CocoMetric (pycocotools). Use with an
# mmdet runtime (default_scope = 'mmdet').
data_root = 'data/digit_scenes/'
_scenes = dict(type='DigitScenesDataset', data_root=data_root, num_train=2000, num_val=250,
               num_test=1000, seed=0)

# no flips: a mirrored digit is another glyph
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),  # sets scale_factor (a no-op here)
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(**_scenes, split='train', filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline))
# The presets select nothing (no best checkpoint, no early stop), so the one validation at the end
# of training is the test result: validation runs on the test split. A held-out `split='val'`
# (250 scenes) is generated too, for configs that select.
test_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_scenes, split='test', pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_test.json',
                      metric='bbox', format_only=False)
val_evaluator = test_evaluator
