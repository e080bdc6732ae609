# DropKey vs Dropout vs none on CIFAR-100 (DropKey paper, Li et al. CVPR 2023: attention
# regularizer comparison on a ViT trained from scratch). GPU preset; each run is one GPU:
#   python tools/benchmark_regularizers.py configs/benchmark/cifar100_dropkey.py
# Model: the project's from-scratch ViT-16 on 32x32 CIFAR-100 (configs/deepvit/, 16 blocks,
# 384-d, 4x4 patches, 200 epochs). Dropout = dropout on the attention weights after the softmax
# (the paper's "Dropout" baseline); DropKey masks the logits before the softmax. Ratio 0.1 (the
# official code's default); 'decrease' goes linearly from 0.1 (first block) to 0 (last block).
base = 'configs/deepvit/vit-16-p4_1xb128-200e_cifar100.py'
seeds = [0, 1, 2]
metrics = ['accuracy/top1']
baseline = 'none'
_BACKBONE = {'model.backbone.type': 'Regularized', 'model.backbone.host': 'VisionTransformer'}
variants = dict(
    none=dict(description='no attention regularizer'),
    dropout=dict(description='attention-weight Dropout 0.1',
                 cfg_options={'model.backbone.layer_cfgs': dict(attn_drop_rate=0.1)}),
    dropkey_constant=dict(description='DropKey 0.1 in every block',
                          cfg_options={**_BACKBONE, 'model.backbone.dropkey':
                                       dict(ratio=0.1, schedule='constant')}),
    dropkey_decrease=dict(description='DropKey 0.1 -> 0 with depth (paper)',
                          cfg_options={**_BACKBONE, 'model.backbone.dropkey':
                                       dict(ratio=0.1, schedule='decrease')}),
)
