# RetinaNet R-50-FPN 1x COCO + DRLoc as an auxiliary loss on the backbone's C5 map (stride 32,
# non-square, native grid). Pairs are drawn inside each image's unpadded area; L1 on absolute
# offsets, m = 64 pairs per image, constant lambda = 0.1 (the DRLoc paper only fine-tunes
# DRLoc-pretrained backbones for detection; this auxiliary-loss setting is an extension).
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(
    type='Regularized',
    host='RetinaNet',
    drloc=dict(
        source='backbone',
        index=-1,  # ResNet C5 (out_indices=(0, 1, 2, 3))
        in_channels=2048,
        num_pairs=64,
        variant='l1',
        loss_weight=0.1,
        pool_size=None,
    ),
)
