# DropKey across the DropKey paper's tasks (Li et al., CVPR 2023): CIFAR-100 (ViT-S/4),
# ImageNet-1k (DeiT-S), COCO (DETR-R50) and HICO-DET (QPIC-R50), each with its project config
# and its own baseline, 3 seeds. GPU suite, e.g. on one 8-GPU node:
#   python tools/benchmark_regularizers.py configs/benchmark/suite_dropkey_gpu.py --jobs 1 --gpus-per-run 8
#   python tools/benchmark_regularizers.py configs/benchmark/suite_dropkey_gpu.py --slurm PARTITION --gpus-per-run 8 --submit
# Each preset keeps its total batch and LR on any --gpus-per-run (per-GPU batch = total / GPUs,
# --batch-policy keep-total) and each run keeps its last checkpoint (--keep-checkpoints 1);
# --dry-run prints the batch of every run and the GPU-hours and disk of the plan.
suite = dict(
    variants=['baseline', 'dropout', 'dropkey'],
    seeds=[0, 1, 2],
    tasks=dict(
        cifar100=dict(preset='cifar100_dropkey.py'),
        in1k=dict(preset='in1k_dropkey.py'),
        coco=dict(preset='coco_detr_dropkey.py'),
        hico=dict(preset='hico_qpic_dropkey.py'),
    ))
