# DropKey vs Dropout vs none on CIFAR-100 (DropKey paper, Li et al. CVPR 2023: attention
# regularizers on a ViT trained from scratch). GPU preset, one GPU per run (8 runs at once):
#   python tools/benchmark_regularizers.py configs/benchmark/cifar100_dropkey.py --jobs 8
# The variants are the project's configs in configs/dropkey/ (ViT-S/4 on 32x32 CIFAR-100, 300
# epochs): Dropout = attention-weight dropout after the softmax (the paper's baseline), DropKey =
# logits masked before the softmax, ratio 0.1 decreasing to 0 with depth (the paper's default);
# attention_dropout = the Dropout baseline with DropKey's decreasing schedule (the paper reports
# that the schedule helps Dropout too).
_base_ = ['../dropkey/vit-small-p4_1xb128-300e_cifar100.py']

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=0.012, checkpoint_gb=0.26,
                   source="V100: the DeiT paper's DeiT-S ImageNet epoch (300 in < 3 days on 4 GPUs) x CIFAR/ImageNet images x tokens (65/197); checkpoint: 21.4M params x 12 B (weights + AdamW moments)"),
    description='Does DropKey help a ViT trained from scratch on CIFAR-100, against no attention '
    'regularizer and against attention dropout?',
    seeds=[0, 1, 2, 3, 4],
    metrics=['accuracy/top1'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='no attention regularizer'),
        dropout=dict(config='../dropkey/vit-small-p4_dropout_1xb128-300e_cifar100.py',
                     description='attention dropout 0.1 in every block (the paper\'s baseline)',
                     question='attention dropout vs no attention regularizer'),
        dropkey=dict(config='../dropkey/vit-small-p4_dropkey_1xb128-300e_cifar100.py',
                     description='DropKey 0.1 decreasing linearly to 0 with depth (the paper)',
                     question=dict(baseline='DropKey vs no attention regularizer',
                                   dropout='DropKey vs attention dropout')),
        dropkey_constant=dict(
            description='DropKey 0.1 in every block',
            recipe='../dropkey/vit-small-p4_dropkey_1xb128-300e_cifar100.py',
            cfg_options={'model.backbone.dropkey.schedule': 'constant'},
            question=dict(baseline='constant-ratio DropKey vs no attention regularizer',
                          dropkey='constant vs decreasing DropKey ratio')),
        attention_dropout=dict(
            description='Dropout on the attention weights, 0.1 in the first block decreasing '
            'linearly to 0 (DropKey schedule)',
            cfg_options={'model.backbone.type': 'Regularized',
                         'model.backbone.host': 'VisionTransformer',
                         'model.backbone.attention_dropout': dict(ratio=0.1,
                                                                  schedule='decrease')},
            question=dict(
                baseline='decreasing attention dropout vs no attention regularizer',
                dropkey='decreasing attention dropout vs DropKey')),
    ))
