# HOI preset (no download, CPU): does a regularizer help QPIC? The small QPIC of
# configs/qpic/qpic_r18-w32_1xb16-25e_digit-hoi.py on digit HOI (rings interacting with
# handwritten digits through 6 pair-dependent verbs; 60 HOI classes with a rare split; 2,000
# training / 1,000 test scenes), HICO-DET mAP (official protocol) on the test split, through the
# same HICODetDataset -> pair-aware transforms -> HICODetMetric path as HICO-DET itself. Every
# variant starts from the same DETR (load_from digits://detr-r18-w32-s8-digit-hoi), as QPIC from
# COCO DETR.
#
#   OMP_NUM_THREADS=1 python tools/train.py configs/benchmark/digit_scenes_hoi.py   # baseline
#   python tools/benchmark_regularizers.py configs/benchmark/digit_scenes_hoi.py --jobs 2
#
# The variants are the project's QPIC recipes unchanged: `dropkey` is what
# configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py changes (DropKey 0.1 decreasing with depth in
# the encoder and decoder attentions), `drloc` what qpic_r50_drloc_8xb2-150e_hico.py changes
# (DRLoc on the backbone's last map: here the 8x8 stride-8 map).
_base_ = ['../qpic/qpic_r18-w32_1xb16-25e_digit-hoi.py']

benchmark = dict(
    description='Does a regularizer help QPIC on digit HOI? DropKey against no attention '
    'regularizer (the small QPIC has no attention dropout), DRLoc against no DRLoc.',
    seeds=[0, 1, 2, 3, 4],
    metrics=['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare'],
    baseline='baseline',
    # the validation split is the test split (validated once, after the last epoch): the final
    # validation is the test result, so no separate test pass and nothing is selected on it.
    test=False,
    variants=dict(
        baseline=dict(description='QPIC from the digit-HOI DETR (digit-pretrained ResNet-18, '
                      'width 32), no attention regularizer'),
        dropkey=dict(description='+ DropKey as in configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
                     recipe='../qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
                     question='DropKey vs no attention regularizer'),
        drloc=dict(description='+ DRLoc as in configs/qpic/qpic_r50_drloc_8xb2-150e_hico.py',
                   recipe='../qpic/qpic_r50_drloc_8xb2-150e_hico.py',
                   question='DRLoc vs no DRLoc'),
    ))
