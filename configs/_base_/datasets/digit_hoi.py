# Digit HOI (mmvitreg.datasets.digit_hoi): 1-2 rings (subjects) per 64x64 canvas, each near 1-3
# handwritten digits (objects, 14-28 px) plus 0-1 far distractor digits; 6 pair-dependent verbs
# x 10 digits = 60 HOI classes, in the HICO-DET JSON layout; generated on first use into
# data/digit_hoi/ (fixed seed; about 20 s). Training digits are long-tailed (the rare split: HOI
# classes with < 40 training instances); test is balanced. The class table travels in the data
# set's metainfo to HICODetMetric.
default_scope = 'mmdet'
data_root = 'data/digit_hoi/'
_digits = dict(type='DigitHOIDataset', data_root=data_root, num_train=2000, num_val=250,
               num_test=1000, seed=0, style=dict(digit_height=(14, 28)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHOIAnnotations'),  # 6 verbs, from the data set's class table
    dict(type='PackHOIInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),  # sets scale_factor (a no-op here)
    dict(type='LoadHOIAnnotations'),
    dict(type='PackHOIInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**_digits, split='train', pipeline=train_pipeline))
# The presets select nothing (no best checkpoint, no early stop), so the one validation at the end
# of training is the test result: validation runs on the test split. A held-out `split='val'`
# (250 scenes) is generated too, for configs that select.
test_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_digits, split='test', pipeline=test_pipeline))
val_dataloader = test_dataloader
# the official protocol (mAP over all 60 classes of the data set's table, Default and
# Known-Object settings)
test_evaluator = dict(type='HICODetMetric')
val_evaluator = test_evaluator
