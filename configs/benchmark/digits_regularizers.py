# Default benchmark (no download, CPU): every mmvitreg regularizer on the project's from-scratch
# ViT-Tiny (96-d, 6 layers, 3 heads, patch 4 -> 16 tokens) on scikit-learn's digits (1,437 train /
# 360 test images upsampled to 16x16), 15 epochs, 2 seeds each: 8 variants x 2 seeds fit in
# ~10-15 minutes on 2 CPU cores.
#
#   python tools/benchmark_regularizers.py configs/benchmark/digits_regularizers.py
#
# Read the numbers as a small-data demo, not as the papers' settings (use the GPU presets next to
# this file for those).
#
# Adding a variant = adding an entry (any config override or whole config), e.g.
#   mytrick=dict(cfg_options={**_BACKBONE, 'model.backbone.mytrick': dict(p=0.2)}),
base = 'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py'
seeds = [0, 1]
metrics = ['accuracy/top1']
baseline = 'baseline'
# digits' validation split is its test split: the final validation (last epoch, last weights) is
# the test result, so the separate tools/test.py pass is skipped here to save time.
test = False

# The base config's schedule (batch 32, AdamW lr 1e-3, 30-iteration warm-up, cosine over 15
# epochs); validate every epoch for the curves, keep one checkpoint.
_EPOCHS = 15
cfg_options = {
    'train_cfg.val_interval': 1,
    'default_hooks.checkpoint': dict(type='CheckpointHook', interval=_EPOCHS, max_keep_ckpts=1,
                                     save_best=None),
    'default_hooks.logger.interval': 15,
}

# `Regularized` switches mechanisms on for the stock mmpretrain VisionTransformer ...
_BACKBONE = {'model.backbone.type': 'Regularized', 'model.backbone.host': 'VisionTransformer'}
# ... or, for mechanisms that add a loss (DRLoc), for the whole ImageClassifier.
_MODEL = {'model.type': 'Regularized', 'model.host': 'ImageClassifier'}

variants = dict(
    baseline=dict(description='ViT-Tiny, stochastic depth 0.1, no attention regularizer'),
    dropout=dict(
        description='Dropout on the attention weights (after softmax), p = 0.1 in every layer',
        cfg_options={'model.backbone.layer_cfgs': dict(attn_drop_rate=0.1)}),
    dropkey_constant=dict(
        description='DropKey (mask logits before softmax), ratio 0.1 in every layer',
        cfg_options={**_BACKBONE,
                     'model.backbone.dropkey': dict(ratio=0.1, schedule='constant')}),
    dropkey_decrease=dict(
        description='DropKey, ratio 0.1 in the first layer decreasing linearly to 0 (paper)',
        cfg_options={**_BACKBONE,
                     'model.backbone.dropkey': dict(ratio=0.1, schedule='decrease')}),
    drloc=dict(
        description='DRLoc auxiliary relative-localization loss on the final 4x4 patch tokens '
        '(64 pairs per image, L1, lambda 0.5)',
        cfg_options={**_MODEL, 'model.drloc': dict(num_pairs=64, variant='l1', loss_weight=0.5)}),
    reattention=dict(
        description='Re-attention (DeepViT) in every block',
        cfg_options={**_BACKBONE, 'model.backbone.reattention': dict()}),
    dhvt=dict(
        description='DHVT backbone of the same width/depth (SOPE, DAFF, head tokens)',
        cfg_options={'model.backbone': dict(
            _delete_=True, type='DHVT',
            arch=dict(embed_dims=96, num_layers=6, num_heads=3, feedforward_channels=384),
            patch_size=4, img_size=16, drop_path_rate=0.1, out_type='cls_token')}),
    dropkey_drloc=dict(
        description='combination: DropKey (decreasing) + DRLoc',
        cfg_options={**_MODEL,
                     'model.backbone': dict(type='Regularized', host='VisionTransformer',
                                            dropkey=dict(ratio=0.1, schedule='decrease')),
                     'model.drloc': dict(num_pairs=64, variant='l1', loss_weight=0.5)}),
)
