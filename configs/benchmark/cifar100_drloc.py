# DRLoc (Liu et al., NeurIPS 2021): each backbone with and without the dense relative
# localization loss, CIFAR-100 from scratch, 100 epochs at 224 px (configs/drloc/, 8 GPUs x 128):
#   python tools/benchmark_regularizers.py configs/benchmark/cifar100_drloc.py --gpus-per-run 8
# Each +DRLoc variant is compared with its own backbone (per-variant `baseline`).
_base_ = ['../drloc/deit-small_8xb128-100e_cifar100-224px.py']

benchmark = dict(
    description='Does the DRLoc loss help DeiT-S and Swin-T trained from scratch on CIFAR-100?',
    seeds=[0, 1, 2],
    metrics=['accuracy/top1'],
    baseline='deit_small',
    variants=dict(
        deit_small=dict(),
        deit_small_drloc=dict(config='../drloc/deit-small_drloc_8xb128-100e_cifar100-224px.py',
                              question='DRLoc vs no DRLoc'),
        swin_tiny=dict(config='../drloc/swin-tiny_8xb128-100e_cifar100-224px.py',
                       baseline='swin_tiny'),
        swin_tiny_drloc=dict(config='../drloc/swin-tiny_drloc_8xb128-100e_cifar100-224px.py',
                             baseline='swin_tiny', question='DRLoc vs no DRLoc'),
    ))
