# DropKey and DRLoc in QPIC-R50 on HICO-DET (DropKey paper, CVPR 2023, HOI detection), on the
# project's configs in configs/qpic/ (official QPIC recipe, 150 epochs, 8 GPUs x 2 images):
#   python tools/benchmark_regularizers.py configs/benchmark/hico_qpic_dropkey.py --gpus-per-run 8
# Reported: HICO-DET mAP (Default setting) on the Full / Rare / Non-rare class splits, with the
# metric mode the configs set (see configs/qpic/ for the paper-comparable mode).
#
# Official QPIC already regularizes its attention (dropout 0.1 on the attention weights), so this
# preset is official QPIC with the attention-weight dropout off (its baseline: `tools/train.py`
# on this file trains it), and every comparison declares its question, as in
# coco_detr_dropkey.py: DropKey vs no attention regularizer, DropKey vs attention dropout
# (official QPIC), attention dropout vs none, the project's DropKey config (DropKey + attention
# dropout) vs attention dropout, and DRLoc vs official QPIC. Only the attention-weight dropout is
# switched off (mmcv's `dropout=0.1` also sets the residual dropout after the attention, which
# stays 0.1, as the FFN's does).
_base_ = ['../qpic/qpic_r50_8xb2-150e_hico.py']

_ATTN = dict(_delete_=True, embed_dims=256, num_heads=8, batch_first=True, attn_drop=0.0,
             dropout_layer=dict(type='Dropout', drop_prob=0.1))
model = dict(encoder=dict(layer_cfg=dict(self_attn_cfg=_ATTN)),
             decoder=dict(layer_cfg=dict(self_attn_cfg=_ATTN, cross_attn_cfg=_ATTN)))

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=1.2, checkpoint_gb=0.51,
                   source="V100: the DETR paper's COCO epoch x HICO-DET/COCO train images (37.6k/118k); checkpoint: 42.5M params (variant mean) x 12 B (weights + AdamW moments)"),
    description='Do DropKey and DRLoc help QPIC-R50 on HICO-DET? DropKey against no attention '
    'regularizer and against (and on top of) the official attention dropout; DRLoc against '
    'official QPIC.',
    seeds=[0, 1, 2],
    metrics=['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='official QPIC with the attention-weight dropout off: no '
                      'attention regularizer'),
        dropout=dict(config='../qpic/qpic_r50_8xb2-150e_hico.py',
                     description='official QPIC: attention-weight dropout 0.1',
                     question='attention dropout vs no attention regularizer'),
        dropkey=dict(recipe='../qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
                     description='DropKey, attention-weight dropout off',
                     question=dict(baseline='DropKey vs no attention regularizer',
                                   dropout='DropKey vs attention dropout')),
        dropkey_dropout=dict(config='../qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
                             description='the project config: DropKey + attention-weight '
                             'dropout 0.1',
                             baseline='dropout',
                             question='DropKey + attention dropout vs attention dropout'),
        drloc=dict(config='../qpic/qpic_r50_drloc_8xb2-150e_hico.py',
                   description='the project config: official QPIC + DRLoc on the C5 map',
                   baseline='dropout', question='DRLoc vs no DRLoc'),
    ))
