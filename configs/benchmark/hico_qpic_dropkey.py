# DropKey vs Dropout vs none in QPIC-R50 on HICO-DET (DropKey paper, CVPR 2023, human-object
# interaction detection). Official QPIC recipe (configs/qpic/, 150 epochs, 8 GPUs x 2 images,
# initialised from COCO DETR-R50); every run goes to tools/dist_train.sh:
#   python tools/benchmark_regularizers.py configs/benchmark/hico_qpic_dropkey.py --launcher pytorch --gpus 8
# Reported: HICO-DET mAP (Default setting) on the Full / Rare / Non-rare class splits. QPIC's
# transformer drops attention weights (0.1) like DETR: that is the `dropout` variant.
base = 'configs/qpic/qpic_r50_8xb2-150e_hico.py'
seeds = [0]
metrics = ['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare']
baseline = 'dropout'
_NO_ATTN_DROPOUT = {
    'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.0,
    'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.0,
}
_MODEL = {'model.type': 'Regularized', 'model.host': 'QPIC'}
variants = dict(
    dropout=dict(description='official QPIC: attention-weight dropout 0.1'),
    none=dict(description='no attention regularizer', cfg_options=_NO_ATTN_DROPOUT),
    dropkey_decrease=dict(cfg_options={**_NO_ATTN_DROPOUT, **_MODEL,
                                       'model.dropkey': dict(ratio=0.1, schedule='decrease')}),
)
