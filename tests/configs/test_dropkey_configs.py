"""Every config in configs/dropkey builds its model and trains one iteration on tiny data (CPU);
DropKey configs have DropKey active in training and inactive in eval."""
import math
import os.path as osp

import pytest
import torch

from mmvitreg.ops.dropkey import DropKey, dropkey_modules
from mmvitreg.testing import last_losses, smoke_train

CFG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                   'configs', 'dropkey')

CONFIGS = [
    # (config, task, expected number of DropKey modules; 0 = baseline)
    ('deit-small_dropkey_4xb256_in1k.py', 'cls', 12),
    ('deit-small_dropout_4xb256_in1k.py', 'cls', 0),
    ('deit-small-distilled_dropkey_4xb256_in1k.py', 'cls', 12),
    ('vit-small-p4_1xb128-300e_cifar100.py', 'cls', 0),
    ('vit-small-p4_dropkey_1xb128-300e_cifar100.py', 'cls', 12),
    ('vit-small-p4_dropout_1xb128-300e_cifar100.py', 'cls', 0),
    ('vit-small-p4_dropkey-block-aligned_1xb128-300e_cifar100.py', 'cls', 12),
    ('detr_r50_8xb2-150e_coco.py', 'det', 0),
    ('detr_r50_dropkey_8xb2-150e_coco.py', 'det', 18),
    ('mask-rcnn_plainvit-b_8xb2-1x_coco.py', 'det', 0),
    ('mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py', 'det', 12),
]


def test_every_config_is_listed():
    import glob
    found = {osp.basename(p) for p in glob.glob(osp.join(CFG_DIR, '*.py'))}
    assert found == {c for c, _, _ in CONFIGS}


@pytest.mark.parametrize('name, task, num_dropkey', CONFIGS, ids=[c[0] for c in CONFIGS])
def test_config_trains_one_iteration(name, task, num_dropkey, tmp_path, capsys):
    torch.manual_seed(0)
    runner = smoke_train(osp.join(CFG_DIR, name), str(tmp_path), task=task)
    losses = last_losses(runner)
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    model = runner.model
    mods = dropkey_modules(model)
    assert len(mods) == num_dropkey
    if not num_dropkey:
        return
    assert mods[0].ratio == pytest.approx(0.1) and mods[-1].ratio == pytest.approx(0.0)
    if 'aligned' in name:  # smoke run (1 iteration) lies inside the final no-DropKey phase
        assert f'DropKey off ({num_dropkey} modules)' in capsys.readouterr().out
        # ... and after training DropKey is on again: val/test use the MC estimator
        assert all(m.enabled for m in mods)
    model.train()
    assert all(m.active for m in mods if m.ratio > 0)
    model.eval()
    assert not any(m.active for m in mods)
    # checkpoints: DropKey adds no state
    assert not any(k.endswith('dropkey') or '.dropkey.' in k for k in model.state_dict())
    assert all(isinstance(m, DropKey) for m in mods)


@pytest.mark.parametrize('path', [
    'dropkey/deit-small_dropkey_4xb256_in1k.py', 'dropkey/deit-small_dropout_4xb256_in1k.py',
    'dropkey/deit-small-distilled_dropkey_4xb256_in1k.py', 'benchmark/in1k_dropkey.py'])
def test_deit_in1k_loaders_keep_the_gpus_fed(path):
    """benchmarks/bench_pipeline.py: DeiT-S's pipeline at 256/GPU needs 7 workers per GPU for a
    0.25 s/iter step; mmpretrain's config has 5. The rest of the loader stays mmpretrain's."""
    from mmengine.config import Config
    loader = Config.fromfile(osp.join(osp.dirname(CFG_DIR), path)).train_dataloader
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (8, True, True)
    assert loader.batch_size == 256 and loader.dataset.type == 'ImageNet'
