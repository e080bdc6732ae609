# DHVT-T (patch 4) on CIFAR-100 with two regularizers on top of the official DHVT recipe:
# * DropKey (ratio 0.1, linearly decreasing with depth) inside every HI-MHSA layer - keys are the
#   patch tokens, the class token and the head tokens;
# * DRLoc on the final (normed) 8x8 patch-token grid: m = 64 pairs, L1 on absolute offsets,
#   lambda = 0.1 with the official 20-epoch warm-up / linear decay.
# The grid comes from `backbone.patch_embed` (SOPE returns (tokens, (H, W))), the tokens from
# `backbone.ln1`, i.e. DRLoc's defaults for token backbones.
_base_ = './dhvt-tiny-p4_2xb256-300e_cifar100.py'
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='Regularized',
    host='ImageClassifier',
    dropkey=dict(ratio=0.1, schedule='decrease'),
    drloc=dict(
        num_pairs=64,
        variant='l1',
        loss_weight=0.1,
        weight_schedule=dict(type='warmup_decay', warmup=20, by_epoch=True),
    ),
)
