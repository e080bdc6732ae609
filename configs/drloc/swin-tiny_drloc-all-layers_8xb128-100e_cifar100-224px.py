# Swin-T + DRLoc "all layers" (official --use_multiscale) on CIFAR-100: one DRLoc MLP per stage,
# losses summed with the same lambda. The official model reads each stage's output after its patch
# merging and before any norm: grids 28/14/7/7 with 192/384/768/768 channels (mmpretrain:
# `stages.{0,1,2}.downsample` return (tokens, (h, w)); the last stage has no merging). For the
# official bin variants set variant='ce' (or 'cbr') and out_dim=[56, 28, 14, 7] (official per-stage
# bins: max(224 // (4 * 2**i), 7)); with L1 (the default mode) there are no bins.
_base_ = './swin-tiny_drloc_8xb128-100e_cifar100-224px.py'

model = dict(
    drloc=dict(
        source=['backbone.stages.0.downsample', 'backbone.stages.1.downsample',
                'backbone.stages.2.downsample', 'backbone.stages.3'],
        in_channels=[192, 384, 768, 768],
    ),
)
