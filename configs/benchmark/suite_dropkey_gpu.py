# DropKey across the DropKey paper's tasks (Li et al., CVPR 2023): CIFAR-100 (ViT-S/4),
# ImageNet-1k (DeiT-S), COCO (DETR-R50) and HICO-DET (QPIC-R50), 3 seeds. Every row of the table
# asks one question on every task: DropKey vs no attention regularizer (on DETR/QPIC: the stock
# model with its attention-weight dropout off), DropKey vs attention dropout (on DETR/QPIC: the
# stock model), attention dropout vs none. The suite refuses a row whose presets declare
# different questions. GPU suite, e.g. on one 8-GPU node:
#   python tools/benchmark_regularizers.py configs/benchmark/suite_dropkey_gpu.py --jobs 1 --gpus-per-run 8
#   python tools/benchmark_regularizers.py configs/benchmark/suite_dropkey_gpu.py --slurm PARTITION --gpus-per-run 8 --submit
# Each preset keeps its total batch and LR on any --gpus-per-run (per-GPU batch = total / GPUs,
# --batch-policy keep-total) and each run keeps its last checkpoint (--keep-checkpoints 1);
# --dry-run prints the batch of every run and the GPU-hours and disk of the plan.
suite = dict(
    description='Does DropKey help, across the DropKey paper\'s tasks, against no attention '
    'regularizer and against attention dropout?',
    variants=['baseline', 'dropout', 'dropkey'],
    comparisons=[
        dict(variant='dropkey', question='DropKey vs no attention regularizer'),
        dict(variant='dropkey', baseline='dropout', question='DropKey vs attention dropout'),
        dict(variant='dropout', question='attention dropout vs no attention regularizer'),
    ],
    seeds=[0, 1, 2],
    tasks=dict(
        cifar100=dict(preset='cifar100_dropkey.py'),
        in1k=dict(preset='in1k_dropkey.py'),
        coco=dict(preset='coco_detr_dropkey.py'),
        hico=dict(preset='hico_qpic_dropkey.py'),
    ))
