"""Every DeepViT / ViT +- Re-attention config builds and trains one iteration on tiny data."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from mmvitreg.models.layers.reattention import reattention_layer_indices
from mmvitreg.testing import last_losses, smoke_train
from tests._helpers import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/deepvit/*.py')))
EXPECTED_REATTENTION = {
    'deepvit-s_8xb32_in1k.py': list(range(11, 16)),
    'deepvit-l_8xb32_in1k.py': list(range(20, 32)),
    'deepvit-16_8xb32_in1k.py': list(range(16)),
    'deepvit-24_8xb32_in1k.py': list(range(24)),
    'deepvit-32_8xb32_in1k.py': list(range(32)),
    'vit-16_8xb32_in1k.py': [],
    'vit-24_8xb32_in1k.py': [],
    'vit-32_8xb32_in1k.py': [],
    'vit-16-p4_1xb128-200e_cifar100.py': [],
    'vit-16-p4-reattention_1xb128-200e_cifar100.py': list(range(16)),
    'deepvit-s-p4_1xb128-200e_cifar100.py': list(range(11, 16)),
}


def test_all_configs_are_listed():
    assert sorted(osp.basename(c) for c in CONFIGS) == sorted(EXPECTED_REATTENTION)


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_trains_one_iteration(config, tmp_path):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports['imports'] == ['mmvitreg']
    # ImageNet configs run on 64x64 inputs here (position embeddings are resized on the fly)
    img_scale = (64, 64) if 'in1k' in config else None
    runner = smoke_train(config, str(tmp_path), img_scale=img_scale)
    losses = last_losses(runner)
    assert 'loss' in losses and losses['loss'] == losses['loss']  # finite, not NaN
    model = runner.model
    assert reattention_layer_indices(model) == EXPECTED_REATTENTION[osp.basename(config)]
