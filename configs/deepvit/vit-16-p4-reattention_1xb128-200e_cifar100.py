# vit-16-p4_1xb128-200e_cifar100.py with Re-attention swapped into every block of the stock
# mmpretrain VisionTransformer by the `Regularized` wrapper (qkv/proj parameter names unchanged).
# `reattention=dict(last_k=K)` re-attends only the last K blocks; add `dropkey=dict(ratio=0.1)`
# to combine it with DropKey (DropKey masks the logits, Re-attention mixes the heads after softmax).
_base_ = ['./vit-16-p4_1xb128-200e_cifar100.py']
model = dict(backbone=dict(type='Regularized', host='VisionTransformer', reattention=dict()))
