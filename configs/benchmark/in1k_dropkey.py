# DropKey vs Dropout vs none on ImageNet-1k with DeiT-S (DropKey paper, CVPR 2023). Stock
# mmpretrain DeiT-S recipe (300 epochs, 4 GPUs x 256) = the configs in configs/dropkey/:
#   python tools/benchmark_regularizers.py configs/benchmark/in1k_dropkey.py --jobs 2 --gpus-per-run 4
# Data: data/imagenet as mmpretrain expects.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

# bench_pipeline.py: 5.9 ms/sample x 256 / 0.25 s/iter -> 7 workers/GPU, +1 spare (mmpretrain: 5)
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True)

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=0.96, checkpoint_gb=0.26,
                   source='V100: DeiT paper, DeiT-S 300 epochs in < 3 days on 4 GPUs; checkpoint: 22.1M params x 12 B (weights + AdamW moments)'),
    description='Does DropKey help DeiT-S on ImageNet-1k, against no attention regularizer and '
    'against attention dropout?',
    seeds=[0, 1, 2],
    metrics=['accuracy/top1', 'accuracy/top5'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='DeiT-S recipe, no attention regularizer'),
        dropout=dict(config='../dropkey/deit-small_dropout_4xb256_in1k.py',
                     description='attention dropout 0.1 in every block (the paper\'s baseline)',
                     question='attention dropout vs no attention regularizer'),
        dropkey=dict(config='../dropkey/deit-small_dropkey_4xb256_in1k.py',
                     description='DropKey 0.1 decreasing linearly to 0 with depth (the paper)',
                     question=dict(baseline='DropKey vs no attention regularizer',
                                   dropout='DropKey vs attention dropout')),
        attention_dropout=dict(
            description='Dropout on the attention weights, 0.1 in the first block decreasing '
            'linearly to 0 (the DropKey schedule, which the paper reports helps Dropout too)',
            cfg_options={'model.backbone.type': 'Regularized',
                         'model.backbone.host': 'VisionTransformer',
                         'model.backbone.attention_dropout': dict(ratio=0.1,
                                                                  schedule='decrease')},
            question=dict(
                baseline='decreasing attention dropout vs no attention regularizer',
                dropkey='decreasing attention dropout vs DropKey')),
    ))
