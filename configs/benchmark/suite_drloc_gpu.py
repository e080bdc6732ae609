# DRLoc across the DRLoc paper's backbones (Liu et al., NeurIPS 2021: DeiT-S and Swin-T on
# CIFAR-100 at 224 px, 100 epochs) and carried to HOI detection (QPIC-R50 on HICO-DET), each
# against the same model without the loss (on HICO-DET: official QPIC, attention dropout kept in
# both), 3 seeds. One question: DRLoc vs no DRLoc. GPU suite:
#   python tools/benchmark_regularizers.py configs/benchmark/suite_drloc_gpu.py --gpus-per-run 8
suite = dict(
    description='Does the DRLoc loss help, on the DRLoc paper\'s backbones and on HOI detection?',
    variants=['baseline', 'drloc'],
    comparisons=[dict(variant='drloc', question='DRLoc vs no DRLoc')],
    seeds=[0, 1, 2],
    tasks=dict(
        cifar100_deit=dict(preset='cifar100_drloc.py',
                           variants=dict(baseline='deit_small', drloc='deit_small_drloc')),
        cifar100_swin=dict(preset='cifar100_drloc.py',
                           variants=dict(baseline='swin_tiny', drloc='swin_tiny_drloc')),
        hico=dict(preset='hico_qpic_dropkey.py', variants=dict(baseline='dropout')),
    ))
