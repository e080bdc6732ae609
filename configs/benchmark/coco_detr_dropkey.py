# DropKey in DETR-R50 on COCO (DropKey paper, CVPR 2023, object detection), on the project's
# configs: configs/dropkey/detr_r50_8xb2-150e_coco.py (stock mmdet DETR, 150 epochs, 8 GPUs x 2
# images, attention-weight dropout 0.1) and configs/dropkey/detr_r50_dropkey_8xb2-150e_coco.py
# (+ DropKey 0.1 decreasing with depth, restarted in the encoder, decoder self- and
# cross-attention groups, next to the stock attention dropout).
#   python tools/benchmark_regularizers.py configs/benchmark/coco_detr_dropkey.py --gpus-per-run 8
#
# Stock DETR already regularizes its attention (dropout 0.1 on the attention weights), so "DropKey
# vs the stock model" would ask a different question than on CIFAR-100 / ImageNet-1k (DropKey vs
# no attention regularizer). This preset is therefore the stock DETR with the attention-weight
# dropout off (its baseline: `tools/train.py` on this file trains it), and every comparison
# declares its question: DropKey vs no attention regularizer, DropKey vs attention dropout (the
# stock model), attention dropout vs none, and the project config (DropKey + attention dropout)
# vs attention dropout. mmcv's `dropout=0.1` sets both the attention-weight dropout and the
# residual dropout after the attention; only the former is switched off, the residual dropout
# (and the FFN's) stays 0.1 in every variant.
_base_ = ['../dropkey/detr_r50_8xb2-150e_coco.py']

_ATTN = dict(_delete_=True, embed_dims=256, num_heads=8, batch_first=True, attn_drop=0.0,
             dropout_layer=dict(type='Dropout', drop_prob=0.1))
model = dict(encoder=dict(layer_cfg=dict(self_attn_cfg=_ATTN)),
             decoder=dict(layer_cfg=dict(self_attn_cfg=_ATTN, cross_attn_cfg=_ATTN)))

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=3.84, checkpoint_gb=0.5,
                   source='V100: DETR paper, 300 epochs in 3 days on 16 GPUs; checkpoint: 41.6M params x 12 B (weights + AdamW moments)'),
    description='Does DropKey help DETR-R50 on COCO, against no attention regularizer and '
    'against (and on top of) the stock attention dropout?',
    seeds=[0, 1, 2],
    metrics=['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='stock DETR with the attention-weight dropout off: no '
                      'attention regularizer'),
        dropout=dict(config='../dropkey/detr_r50_8xb2-150e_coco.py',
                     description='stock DETR: attention-weight dropout 0.1',
                     question='attention dropout vs no attention regularizer'),
        dropkey=dict(recipe='../dropkey/detr_r50_dropkey_8xb2-150e_coco.py',
                     description='DropKey, attention-weight dropout off',
                     question=dict(baseline='DropKey vs no attention regularizer',
                                   dropout='DropKey vs attention dropout')),
        dropkey_dropout=dict(config='../dropkey/detr_r50_dropkey_8xb2-150e_coco.py',
                             description='the project config: DropKey + attention-weight '
                             'dropout 0.1',
                             baseline='dropout',
                             question='DropKey + attention dropout vs attention dropout'),
    ))
