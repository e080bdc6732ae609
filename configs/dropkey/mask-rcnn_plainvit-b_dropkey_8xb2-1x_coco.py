# Plain-ViT-B Mask R-CNN with DropKey in every backbone attention (window and global blocks);
# ratio 0.1 -> 0 with depth. The window (or the global grid) is the key grid for the structured
# variants (variant='block' / 'cross').
_base_ = ['./mask-rcnn_plainvit-b_8xb2-1x_coco.py']

model = dict(backbone=dict(type='Regularized', host='PlainViT',
                           dropkey=dict(ratio=0.1, schedule='decrease', variant='random')))
