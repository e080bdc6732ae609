# DropKey vs Dropout vs none in DETR-R50 on COCO (DropKey paper, CVPR 2023, object detection).
# Stock mmdet DETR recipe (150 epochs, 8 GPUs x 2 images); every run goes to tools/dist_train.sh:
#   python tools/benchmark_regularizers.py configs/benchmark/coco_detr_dropkey.py --launcher pytorch --gpus 8
# Stock DETR already drops attention weights (dropout 0.1 in every encoder/decoder attention):
# that is the `dropout` variant here; `none` sets it to 0; the DropKey variants replace it
# (dropout 0 + DropKey 0.1 in every transformer attention found by mmvitreg's adapters).
base = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
seeds = [0]
metrics = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75']
baseline = 'dropout'
_NO_ATTN_DROPOUT = {
    'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.0,
}
_MODEL = {'model.type': 'Regularized', 'model.host': 'DETR'}
variants = dict(
    dropout=dict(description='stock DETR: attention-weight dropout 0.1'),
    none=dict(description='no attention regularizer', cfg_options=_NO_ATTN_DROPOUT),
    dropkey_constant=dict(cfg_options={**_NO_ATTN_DROPOUT, **_MODEL,
                                       'model.dropkey': dict(ratio=0.1, schedule='constant')}),
    dropkey_decrease=dict(cfg_options={**_NO_ATTN_DROPOUT, **_MODEL,
                                       'model.dropkey': dict(ratio=0.1, schedule='decrease')}),
)
