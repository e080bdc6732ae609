# DRLoc across the DRLoc paper's backbones (Liu et al., NeurIPS 2021: DeiT-S and Swin-T on
# CIFAR-100 at 224 px, 100 epochs) and carried to HOI detection (QPIC-R50 on HICO-DET), each
# against the same model without the loss, 3 seeds. GPU suite:
#   python tools/benchmark_regularizers.py configs/benchmark/suite_drloc_gpu.py --gpus-per-run 8
suite = dict(
    variants=['baseline', 'drloc'],
    seeds=[0, 1, 2],
    tasks=dict(
        cifar100_deit=dict(preset='cifar100_drloc.py',
                           variants=dict(baseline='deit_small', drloc='deit_small_drloc')),
        cifar100_swin=dict(preset='cifar100_drloc.py',
                           variants=dict(baseline='swin_tiny', drloc='swin_tiny_drloc')),
        hico=dict(preset='hico_qpic_dropkey.py'),
    ))
