# Swin-T + DRLoc on CIFAR-100 (224 px, 100 epochs from scratch): the last-stage 7x7 map
# (backbone output), m = 64 pairs, L1 on absolute offsets, lambda = 0.5 (paper/official value for
# Swin) with the official warm-up (20 epochs) / linear decay schedule. For the paper's "all
# layers" variant set `backbone.out_indices=(0, 1, 2, 3)` and `drloc.all_layers=True`.
_base_ = './swin-tiny_8xb128-100e_cifar100-224px.py'

model = dict(
    type='Regularized',
    host='ImageClassifier',
    drloc=dict(
        num_pairs=64,
        variant='l1',
        loss_weight=0.5,
        weight_schedule=dict(type='warmup_decay', warmup=20, by_epoch=True),
        pool_size=None,  # native 7x7 grid
    ),
)
