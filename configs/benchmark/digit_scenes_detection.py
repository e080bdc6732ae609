# Detection preset (no download, CPU): does a regularizer help a ViT detector? The ViT-FCOS of
# configs/vit/fcos_plainvit-t-p8_1xb16-3e_digit-scenes.py on digit scenes (64x64 canvases of
# 2-5 handwritten digits, clutter, overlaps; 2,000 training / 1,000 test scenes, test glyphs
# never seen in training), COCO bbox mAP on the test split (mmdet's CocoMetric).
#
#   OMP_NUM_THREADS=1 python tools/train.py configs/benchmark/digit_scenes_detection.py   # baseline
#   python tools/benchmark_regularizers.py configs/benchmark/digit_scenes_detection.py --jobs 2
#
# The variants apply the project's recipes to the ViT backbone, as on classification:
# `dropkey` is what configs/dropkey/mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py changes (DropKey 0.1,
# decreasing with depth, in every ViT attention); `drloc` adds DRLoc's loss on the ViT's final
# 8x8 token grid (64 pairs, L1, lambda 0.1, as configs/drloc/retinanet_r50_fpn_drloc_1x_coco.py
# on the C5 map). Why a ViT with a one-stage head and not a DETR: README, "Digit scenes".
_base_ = ['../vit/fcos_plainvit-t-p8_1xb16-3e_digit-scenes.py']

benchmark = dict(
    description='Does a regularizer help a ViT detector (ViT-FCOS) on digit scenes? DropKey '
    'against no attention regularizer, DRLoc against no DRLoc.',
    seeds=[0, 1, 2, 3, 4],
    metrics=['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'],
    baseline='baseline',
    # the validation split is the test split (validated once, after the last epoch): the final
    # validation is the test result, so no separate test pass and nothing is selected on it.
    test=False,
    variants=dict(
        baseline=dict(description="ViT-FCOS, digit-pretrained ViT, stochastic depth 0.1"),
        dropkey=dict(description='+ DropKey 0.1 -> 0 with depth in every ViT attention '
                     '(configs/dropkey/mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py)',
                     recipe='../dropkey/mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py',
                     question='DropKey vs no attention regularizer'),
        drloc=dict(description='+ DRLoc on the final ViT token grid (64 pairs, L1, lambda 0.1)',
                   cfg_options={'model.type': 'Regularized', 'model.host': 'FCOS',
                                'model.drloc': dict(source='backbone', index=-1, num_pairs=64,
                                                    variant='l1', loss_weight=0.1,
                                                    pool_size=None)},
                   question='DRLoc vs no DRLoc'),
    ))
