# DETR-R50 on COCO with DropKey (the paper's detection setup). The whole detector is the host;
# each attention group gets its own depth schedule (index = order within the group):
# encoder self-attention, decoder self-attention and decoder cross-attention. Remove a target to
# leave that kind of attention untouched.
_base_ = ['mmdet::detr/detr_r50_8xb2-150e_coco.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(
    type='Regularized',
    host='DETR',
    dropkey=dict(ratio=0.1, schedule='decrease',
                 targets=['encoder', 'decoder.self_attn', 'decoder.cross_attn']))
