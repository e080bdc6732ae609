# DeepViT (Zhou et al., 2021) depth scaling on ImageNet-1k: ViT with 16 / 24 / 32 blocks against
# the same depth with Re-attention (configs/deepvit/, official recipe, 8 GPUs x 32):
#   python tools/benchmark_regularizers.py configs/benchmark/deepvit_depth.py --gpus-per-run 8
# Each DeepViT variant is compared with the plain ViT of the same depth.
_base_ = ['../deepvit/vit-16_8xb32_in1k.py']

benchmark = dict(
    # what --dry-run estimates a plan needs from (GPU-hours per epoch of one run, summed
    # over its GPUs; size of one checkpoint), and where the numbers come from
    resources=dict(gpu_hours_per_epoch=1.6, checkpoint_gb=0.58,
                   source="V100: the DeiT paper's DeiT-S ImageNet epoch x depth / 12 x 10/12 (MLP ratio 3) at the variants' mean depth 24; checkpoint: 36.3M params (variant mean) x 16 B (weights + AdamW moments + EMA)"),
    description='Does Re-attention (DeepViT) help a ViT at 16, 24 and 32 blocks on ImageNet-1k?',
    seeds=[0],
    metrics=['accuracy/top1', 'accuracy/top5'],
    baseline='vit16',
    variants=dict(
        vit16=dict(),
        vit24=dict(config='../deepvit/vit-24_8xb32_in1k.py', baseline='vit24'),
        vit32=dict(config='../deepvit/vit-32_8xb32_in1k.py', baseline='vit32'),
        deepvit16=dict(config='../deepvit/deepvit-16_8xb32_in1k.py', baseline='vit16',
                       question='Re-attention vs self-attention'),
        deepvit24=dict(config='../deepvit/deepvit-24_8xb32_in1k.py', baseline='vit24',
                       question='Re-attention vs self-attention'),
        deepvit32=dict(config='../deepvit/deepvit-32_8xb32_in1k.py', baseline='vit32',
                       question='Re-attention vs self-attention'),
    ))
