# DropKey and DRLoc in QPIC-R50 on HICO-DET (DropKey paper, CVPR 2023, HOI detection), exactly the
# project's configs in configs/qpic/ (official QPIC recipe, 150 epochs, 8 GPUs x 2 images):
#   python tools/benchmark_regularizers.py configs/benchmark/hico_qpic_dropkey.py --gpus-per-run 8
# Reported: HICO-DET mAP (Default setting) on the Full / Rare / Non-rare class splits, with the
# metric mode the configs set (see configs/qpic/ for the paper-comparable mode).
_base_ = ['../qpic/qpic_r50_8xb2-150e_hico.py']

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=1.2, checkpoint_gb=0.51,
                   source="V100: the DETR paper's COCO epoch x HICO-DET/COCO train images (37.6k/118k); checkpoint: 42.5M params (variant mean) x 12 B (weights + AdamW moments)"),
    seeds=[0, 1, 2],
    metrics=['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare'],
    baseline='baseline',
    variants=dict(
        baseline=dict(description='official QPIC: attention-weight dropout 0.1'),
        dropkey=dict(config='../qpic/qpic_r50_dropkey_8xb2-150e_hico.py'),
        drloc=dict(config='../qpic/qpic_r50_drloc_8xb2-150e_hico.py'),
    ))
