# Default benchmark (`make demo`; no download, CPU): does a regularizer help a small ViT trained
# from scratch on small data? The project's ViT-Tiny (96-d, 6 layers, 3 heads, patch 4 -> 16
# tokens) on scikit-learn's digits (1,437 train / 360 test images at 16x16), 15 epochs, against
# five mechanisms, 5 seeds each (paired by seed): 30 runs, two at a time on 2 CPU cores.
#
#   python tools/benchmark_regularizers.py configs/benchmark/digits_regularizers.py --jobs 2
#
# This file is an ordinary mmengine config: `python tools/train.py` on it trains the baseline.
# Read the numbers as a small-data demo, not as the papers' settings (GPU presets next to this
# file). Adding a variant = adding an entry (any config override, a regularizer config's recipe,
# or a whole config), e.g.
#   mytrick=dict(cfg_options={**_BACKBONE, 'model.backbone.mytrick': dict(p=0.2)}),
_base_ = ['../vit/vit-tiny-p4_1xb32-15e_digits-16px.py']

# Validate every epoch (the curves), keep one checkpoint, log every 15 iterations.
_EPOCHS = 15
train_cfg = dict(max_epochs=_EPOCHS, val_interval=1)
default_hooks = dict(
    checkpoint=dict(type='SafeCheckpointHook', interval=_EPOCHS, max_keep_ckpts=1, save_best=None),
    logger=dict(interval=15))

# `Regularized` switches mechanisms on for the stock mmpretrain VisionTransformer ...
_BACKBONE = {'model.backbone.type': 'Regularized', 'model.backbone.host': 'VisionTransformer'}
# ... or, for mechanisms that add a loss (DRLoc), for the whole ImageClassifier.
_MODEL = {'model.type': 'Regularized', 'model.host': 'ImageClassifier'}

benchmark = dict(
    description='Does a regularizer help a small ViT trained from scratch on small data? Each '
    'mechanism against no attention regularizer (DHVT: an architecture, against the ViT).',
    seeds=[0, 1, 2, 3, 4],
    metrics=['accuracy/top1'],
    baseline='baseline',
    # digits' validation split is its test split: the final validation (last epoch, last
    # weights) is the test result, so no separate test pass.
    test=False,
    variants=dict(
        baseline=dict(description='ViT-Tiny, stochastic depth 0.1, no attention regularizer'),
        dropout=dict(
            description='Dropout on the attention weights (after softmax), p = 0.1 in every layer',
            cfg_options={'model.backbone.layer_cfgs': dict(attn_drop_rate=0.1)},
            question='attention dropout vs no attention regularizer'),
        dropkey=dict(
            description='DropKey (mask logits before softmax), ratio 0.1 in the first layer '
            'decreasing linearly to 0 (paper)',
            cfg_options={**_BACKBONE,
                         'model.backbone.dropkey': dict(ratio=0.1, schedule='decrease')},
            question=dict(baseline='DropKey vs no attention regularizer',
                          dropout='DropKey vs attention dropout')),
        drloc=dict(
            description='DRLoc relative-localization loss on the final 4x4 patch tokens '
            '(64 pairs per image, L1, lambda 0.5)',
            cfg_options={**_MODEL,
                         'model.drloc': dict(num_pairs=64, variant='l1', loss_weight=0.5)},
            question='DRLoc vs no DRLoc'),
        reattention=dict(
            description='Re-attention (DeepViT) in every block',
            cfg_options={**_BACKBONE, 'model.backbone.reattention': dict()},
            question='Re-attention vs self-attention'),
        dhvt=dict(
            description='DHVT backbone of the same width/depth (SOPE, DAFF, head tokens)',
            cfg_options={'model.backbone': dict(
                _delete_=True, type='DHVT',
                arch=dict(embed_dims=96, num_layers=6, num_heads=3, feedforward_channels=384),
                patch_size=4, img_size=16, drop_path_rate=0.1, out_type='cls_token')},
            question='DHVT vs ViT (architecture)'),
    ))
