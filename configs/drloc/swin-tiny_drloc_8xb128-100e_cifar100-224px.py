# Swin-T + DRLoc on CIFAR-100 (224 px, official 101-epoch loop from scratch): the last stage's 7x7
# tokens as the official model reads them (output of the last stage, before the final norm:
# `backbone.stages.3` returns (tokens, (7, 7))), m = 64 pairs, L1 on absolute offsets (train.sh:
# --use_abs), lambda = 0.5 (paper/official value for Swin) with the official warm-up (20 epochs) /
# linear decay of a 300-epoch schedule. The paper's "all layers" variant:
# swin-tiny_drloc-all-layers_8xb128-100e_cifar100-224px.py. Record: docs/recipes/drloc.md.
_base_ = './swin-tiny_8xb128-100e_cifar100-224px.py'

model = dict(
    type='Regularized',
    host='ImageClassifier',
    drloc=dict(
        source='backbone.stages.3',
        in_channels=768,
        num_pairs=64,
        variant='l1',
        loss_weight=0.5,
        weight_schedule=dict(type='warmup_decay', warmup=20, total=300, by_epoch=True),
        pool_size=None,  # native 7x7 grid
    ),
)
