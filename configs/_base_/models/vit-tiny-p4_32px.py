# A small ViT for 32x32 inputs (patch 4 -> 8x8 tokens), sized to train from scratch on a CPU.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=96, num_layers=6, num_heads=3, feedforward_channels=384),
        img_size=32,
        patch_size=4,
        drop_rate=0.0,
        drop_path_rate=0.1,
        out_type='cls_token',
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02),
                  dict(type='Constant', layer='LayerNorm', val=1., bias=0.)],
    ),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=96,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
)
