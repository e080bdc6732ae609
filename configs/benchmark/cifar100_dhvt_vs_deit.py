# DHVT (Lu et al., NeurIPS 2022) vs DeiT of the same width on CIFAR-100 from scratch, 300 epochs
# at 32x32 with 4x4 patches, the official DHVT recipe for both (configs/dhvt/, 2 GPUs x 256):
#   python tools/benchmark_regularizers.py configs/benchmark/cifar100_dhvt_vs_deit.py --jobs 4 --gpus-per-run 2
# The DeiT variants keep the DHVT recipe and swap the backbone for a stock mmpretrain
# VisionTransformer (DeiT-T: 192-d/3 heads, DeiT-S: 384-d/6 heads, 12 blocks, patch 4).
_base_ = ['../dhvt/dhvt-tiny-p4_2xb256-300e_cifar100.py']
_DHVT_S = '../dhvt/dhvt-small-p4_2xb256-300e_cifar100.py'
_DEIT = dict(_delete_=True, type='VisionTransformer', img_size=32, patch_size=4,
             drop_path_rate=0.1, out_type='cls_token')

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=0.008, checkpoint_gb=0.22,
                   source='V100: the ViT-S/4 CIFAR epoch of cifar100_dropkey.py for the small variants, a quarter for the tiny ones (mean); checkpoint: 14.1M params (variant mean) x 16 B (weights + AdamW moments + EMA)'),
    description='An architecture comparison, not a regularizer: DHVT vs DeiT of the same width '
    'on CIFAR-100 from scratch, both with the DHVT recipe.',
    seeds=[0, 1, 2],
    metrics=['accuracy/top1'],
    baseline='deit_tiny',
    variants=dict(
        deit_tiny=dict(description='DeiT-T (stock mmpretrain VisionTransformer), DHVT recipe',
                       cfg_options={'model.backbone': dict(_DEIT, arch='deit-tiny')}),
        dhvt_tiny=dict(question='DHVT vs DeiT (architecture)'),
        deit_small=dict(config=_DHVT_S, baseline='deit_small',
                        description='DeiT-S (stock mmpretrain VisionTransformer), DHVT recipe',
                        cfg_options={'model.backbone': dict(_DEIT, arch='deit-small')}),
        dhvt_small=dict(config=_DHVT_S, baseline='deit_small',
                        question='DHVT vs DeiT (architecture)'),
    ))
