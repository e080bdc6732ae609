# QPIC (Tamura et al., CVPR 2021) = mmdet DETR-R50 (C5, 6 enc + 6 dec layers, width 256, 8 heads,
# 100 queries) with the interaction head QPICHead (80 objects + no-object, 117 verbs).
# Loss/cost weights of the official HICO-DET recipe: object CE 1 (no-object 0.1), verb focal 1,
# L1 2.5, GIoU 1; matching costs object 1, verb 1, L1 2.5, GIoU 1 (box costs: max over sub/obj).
model = dict(
    type='QPIC',
    num_queries=100,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1),
    encoder=dict(  # DetrTransformerEncoder
        num_layers=6,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.1, batch_first=True),
            ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.1,
                         act_cfg=dict(type='ReLU', inplace=True)))),
    decoder=dict(  # DetrTransformerDecoder
        num_layers=6,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.1, batch_first=True),
            cross_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.1, batch_first=True),
            ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.1,
                         act_cfg=dict(type='ReLU', inplace=True))),
        return_intermediate=True),  # auxiliary losses on every decoder layer
    positional_encoding=dict(num_feats=128, normalize=True),
    bbox_head=dict(
        type='QPICHead',
        num_obj_classes=80,
        num_verb_classes=117,
        embed_dims=256,
        loss_obj_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                          class_weight=1.0, bg_cls_weight=0.1),
        loss_verb_cls=dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=2.5),
        loss_iou=dict(type='GIoULoss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='HOIHungarianAssigner',
            match_costs=[
                dict(type='HOIClassCost', weight=1.0),
                dict(type='VerbCost', weight=1.0),
                dict(type='HOIBoxL1Cost', weight=2.5, box_format='xywh'),
                dict(type='HOIGIoUCost', weight=1.0),
            ])),
    # top-100 (pair, verb) triplets; scores masked by the HICO verb-object table (corre_hico)
    test_cfg=dict(max_per_img=100, corre='hico'))
