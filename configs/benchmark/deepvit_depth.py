# DeepViT (Zhou et al., 2021) depth scaling on ImageNet-1k: ViT with 16 / 24 / 32 blocks against
# the same depth with Re-attention (configs/deepvit/, official recipe, 8 GPUs x 32):
#   python tools/benchmark_regularizers.py configs/benchmark/deepvit_depth.py --launcher pytorch --gpus 8
# The plain ViT's accuracy saturates (attention collapse) as depth grows; each DeepViT variant is
# compared with the plain ViT of the same depth.
seeds = [0]
metrics = ['accuracy/top1', 'accuracy/top5']
baseline = 'vit16'
variants = dict(
    vit16=dict(config='configs/deepvit/vit-16_8xb32_in1k.py'),
    vit24=dict(config='configs/deepvit/vit-24_8xb32_in1k.py', baseline='vit24'),
    vit32=dict(config='configs/deepvit/vit-32_8xb32_in1k.py', baseline='vit32'),
    deepvit16=dict(config='configs/deepvit/deepvit-16_8xb32_in1k.py', baseline='vit16'),
    deepvit24=dict(config='configs/deepvit/deepvit-24_8xb32_in1k.py', baseline='vit24'),
    deepvit32=dict(config='configs/deepvit/deepvit-32_8xb32_in1k.py', baseline='vit32'),
)
