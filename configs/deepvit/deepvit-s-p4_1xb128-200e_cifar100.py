# DeepViT-S (official architecture: conv stem, residual scaling 0.5, Re-attention in the last
# 5 of 16 blocks) trained from scratch on CIFAR-100 at 32x32; patch size 4 (the conv stem's
# projection becomes 2x2/2) gives 8x8 tokens. Recipe of vit-16-p4_1xb128-200e_cifar100.py.
_base_ = ['./vit-16-p4_1xb128-200e_cifar100.py']
model = dict(
    backbone=dict(_delete_=True, type='DeepViT', arch='deepvit-s', img_size=32, patch_size=4,
                  drop_path_rate=0.1),
    head=dict(in_channels=396),
)
