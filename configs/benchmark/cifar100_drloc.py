# DRLoc (Liu et al., NeurIPS 2021): each backbone with and without the dense relative
# localization loss, CIFAR-100 from scratch, 100 epochs at 224 px (configs/drloc/, 8 GPUs x 128):
#   python tools/benchmark_regularizers.py configs/benchmark/cifar100_drloc.py --gpus-per-run 8
# Each +DRLoc variant is compared with its own backbone (per-variant `baseline`).
_base_ = ['../drloc/deit-small_8xb128-100e_cifar100-224px.py']

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=0.037, checkpoint_gb=0.3,
                   source="V100: the DeiT paper's DeiT-S ImageNet epoch x CIFAR/ImageNet images (Swin-T: similar FLOPs); checkpoint: 25.1M params (variant mean) x 12 B (weights + AdamW moments)"),
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
