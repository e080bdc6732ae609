# DeepViT-S for ImageNet-1k (Zhou et al. 2021; official zhoudaquan/dvit_repo `deepvit_S`):
# 16 blocks, dim 396, 12 heads, MLP ratio 3, Re-attention in the last 5 blocks, conv stem,
# residual scaling 0.5. Official init: trunc-normal(0.02) Linear layers (head included).
# Drop path 0.2: scripts/DeepViT_{S,L}_CNN_patch.yaml and DeepViT_{24,32}B_pure_transformer.yaml.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DeepViT', arch='deepvit-s', img_size=224, patch_size=16,
                  drop_path_rate=0.2),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=1000,
        in_channels=396,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
