# DropKey vs Dropout vs none on ImageNet-1k with DeiT-S (DropKey paper, CVPR 2023, ImageNet
# classification with DeiT/T2T/VOLO/CeiT backbones). Stock mmpretrain DeiT-S recipe (300 epochs,
# 4 GPUs x 256); every run goes to tools/dist_train.sh:
#   python tools/benchmark_regularizers.py configs/benchmark/in1k_dropkey.py --launcher pytorch --gpus 4
# Data: data/imagenet as mmpretrain expects.
base = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
seeds = [0]
metrics = ['accuracy/top1', 'accuracy/top5']
baseline = 'none'
_BACKBONE = {'model.backbone.type': 'Regularized', 'model.backbone.host': 'VisionTransformer'}
variants = dict(
    none=dict(description='DeiT-S recipe, no attention regularizer'),
    dropout=dict(description='attention-weight Dropout 0.1',
                 cfg_options={'model.backbone.layer_cfgs': dict(attn_drop_rate=0.1)}),
    dropkey_constant=dict(cfg_options={**_BACKBONE, 'model.backbone.dropkey':
                                       dict(ratio=0.1, schedule='constant')}),
    dropkey_decrease=dict(cfg_options={**_BACKBONE, 'model.backbone.dropkey':
                                       dict(ratio=0.1, schedule='decrease')}),
)
