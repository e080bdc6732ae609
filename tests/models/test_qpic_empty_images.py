"""QPIC trains on HICO-DET images without HOIs: the official training set keeps them (qpic
``datasets/hico.py``), every query of such an image learns "no interaction"."""
import math
import os.path as osp

from mmengine.config import Config

from mmvitreg.testing.smoke import last_losses, shrink_config
from tests._helpers import REPO, empty_some_hico_train_images

CONFIG = osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


def test_tiny_qpic_trains_one_iteration_on_a_batch_with_images_without_hois(tmp_path):
    from mmengine.runner import Runner

    import mmvitreg  # noqa: F401
    root = str(tmp_path / 'hico')
    cfg = shrink_config(Config.fromfile(CONFIG), str(tmp_path / 'work'), task='hoi',
                        max_iters=1, batch_size=3, data_root=root)
    # the shipped config keeps images without HOIs (as QPIC), the smoke shrink keeps its filter
    assert cfg.train_dataloader.dataset.filter_cfg == dict(filter_empty_gt=False)
    empty_some_hico_train_images(root)
    runner = Runner.from_cfg(cfg)
    assert len(runner.train_dataloader.dataset) == 3

    seen = []
    loss = runner.model.loss

    def recording_loss(inputs, data_samples):
        seen.append(sorted((len(s.gt_hoi.sub_ids), len(s.gt_instances))
                           for s in data_samples))
        return loss(inputs, data_samples)

    runner.model.loss = recording_loss
    before = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
    runner.train()
    assert len(seen) == 1
    n_pairs = [p for p, _ in seen[0]]
    assert n_pairs[:2] == [0, 0] and n_pairs[2] > 0
    assert sorted(b for _, b in seen[0])[0] == 0  # one image without any box
    losses = last_losses(runner)
    for key in ('loss_obj_cls', 'loss_verb_cls', 'loss_sub_bbox', 'loss_obj_iou'):
        assert key in losses and math.isfinite(losses[key]), (key, losses)
    after = dict(runner.model.named_parameters())
    assert all(after[n].isfinite().all() for n in before)
    assert any(not after[n].detach().equal(before[n]) for n in before)  # a real update
