# QPIC-R50 on HICO-DET + DRLoc (Liu et al., NeurIPS 2021): an auxiliary dense relative
# localization loss on a feature map: here the backbone's C5 map (ResNet-50 stage 4, stride 32,
# 2048 channels), the map the transformer encoder reads; `source='neck'` would use the 256-d
# projected map instead. The head is training-only; predict and checkpoints are unchanged.
# Same schedule and total batch (8 GPUs x 2 images) as the baseline; see its notes.
_base_ = ['./qpic_r50_8xb2-150e_hico.py']

model = dict(
    type='Regularized',
    host='QPIC',
    drloc=dict(
        source='backbone',
        num_pairs=64,
        variant='l1',
        loss_weight=0.1,
        pool_size=None))    # C5 of an 800x1333 image is ~25x42: sample on the native grid
