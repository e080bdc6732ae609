# DropKey in DETR-R50 on COCO (DropKey paper, CVPR 2023, object detection), exactly the project's
# configs: configs/dropkey/detr_r50_8xb2-150e_coco.py (stock mmdet DETR, 150 epochs, 8 GPUs x 2 images,
# attention-weight dropout 0.1) and configs/dropkey/detr_r50_dropkey_8xb2-150e_coco.py (+ DropKey 0.1
# decreasing with depth, restarted in the encoder, decoder self- and cross-attention groups).
#   python tools/benchmark_regularizers.py configs/benchmark/coco_detr_dropkey.py --gpus-per-run 8
_base_ = ['../dropkey/detr_r50_8xb2-150e_coco.py']

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=3.84, checkpoint_gb=0.5,
                   source='V100: DETR paper, 300 epochs in 3 days on 16 GPUs; checkpoint: 41.6M params x 12 B (weights + AdamW moments)'),
    seeds=[0, 1, 2],
    metrics=['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='stock DETR: attention-weight dropout 0.1'),
        dropkey=dict(config='../dropkey/detr_r50_dropkey_8xb2-150e_coco.py'),
        none=dict(description='attention-weight dropout off',
                  cfg_options={'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.0,
                               'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.0,
                               'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.0}),
    ))
