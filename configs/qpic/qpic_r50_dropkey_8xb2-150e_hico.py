# QPIC-R50 on HICO-DET + DropKey (Li et al., CVPR 2023) in the transformer attentions.
# Every mmcv MultiheadAttention of the encoder (self-attention) and of the decoder (self- and
# cross-attention) drops attention logits before the softmax in training; the ratio decreases
# linearly with depth inside each group (first layer 0.1 -> last layer 0), as in the paper.
# Nothing changes at test time, and parameter names are those of QPIC (checkpoints interchange).
# Same schedule and total batch (8 GPUs x 2 images) as the baseline; see its notes.
_base_ = ['./qpic_r50_8xb2-150e_hico.py']

model = dict(
    type='Regularized',
    host='QPIC',
    dropkey=dict(
        ratio=0.1,
        schedule='decrease',
        targets=[
            dict(name='encoder'),                 # 6 encoder self-attentions
            dict(name='decoder.self_attn'),       # 6 decoder self-attentions (queries)
            dict(name='decoder.cross_attn'),      # 6 decoder cross-attentions (image keys)
        ]))
