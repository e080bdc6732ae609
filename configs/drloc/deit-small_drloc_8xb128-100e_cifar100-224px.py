# DeiT-Small + DRLoc on CIFAR-100 (224 px, official 101-epoch loop from scratch). The final patch
# tokens (class token dropped) form a 14x14 grid, average-pooled to 7x7 (official T2T pooling),
# m = 64 pairs per image, L1 on absolute offsets (official train.sh: --use_abs), lambda = 0.1 (paper
# value for T2T/CvT) with the official warm-up (20 epochs) / linear decay of a 300-epoch schedule
# (lambda reaches 0.1 at epoch 20 and 0.071 at epoch 100). Record: docs/recipes/drloc.md.
_base_ = './deit-small_8xb128-100e_cifar100-224px.py'

model = dict(
    type='Regularized',
    host='ImageClassifier',
    drloc=dict(
        num_pairs=64,
        variant='l1',
        loss_weight=0.1,
        weight_schedule=dict(type='warmup_decay', warmup=20, total=300, by_epoch=True),
        pool_size=7,
        pool_mode='overlap',
    ),
)
