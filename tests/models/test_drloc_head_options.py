"""DRLocHead options of the official code (issue 14): --use_abs for ce/cbr, the official bin
layout (``out_dim``), the lambda schedule's own total and the schedule under iteration loops."""
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

import mmvitreg  # noqa: F401
from mmvitreg.models.heads.drloc_head import DRLocHead
from mmvitreg.models.losses.drloc import sample_pair_positions

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS = osp.join(REPO, 'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py')


def _ce_axis(logits, target):
    """Official per-axis cross-entropy written out: mean_n (log sum_c exp z_nc - z_n,t)."""
    return sum(math.log(sum(math.exp(z) for z in row)) - row[t]
               for row, t in zip(logits.tolist(), target.tolist())) / len(target)


@pytest.mark.parametrize('use_abs, bins', [(True, 14), (False, 27)])
def test_official_t2t_layout_out_dim_14_on_7x7(use_abs, bins):
    """T2T/CvT/ResNet: out_dim=14 on the pooled 7x7 grid; abs -> 14 bins of |delta|,
    signed -> 2*14-1 = 27 bins with targets delta + 6 (official shift H - 1)."""
    head = DRLocHead(in_channels=6, num_pairs=5, variant='ce', out_dim=14, use_abs=use_abs,
                     loss_weight=1.0)
    assert head.row_fc.out_features == head.col_fc.out_features == bins
    feats = torch.randn(3, 6, 7, 7)
    (row, col), target = head(feats, generator=torch.Generator().manual_seed(2))
    pos_a, pos_b = sample_pair_positions(3, 7, 7, 5, generator=torch.Generator().manual_seed(2))
    delta = (pos_a - pos_b).flatten(0, 1)
    assert torch.equal(target, delta.abs() if use_abs else delta + 6)
    loss = head.loss(feats, generator=torch.Generator().manual_seed(2))['loss_drloc']
    expected = _ce_axis(row.double(), target[:, 0]) + _ce_axis(col.double(), target[:, 1])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_use_abs_is_the_default_for_bin_variants():
    """train.sh always passes --use_abs: 'ce'/'cbr' classify |delta| unless use_abs=False."""
    head = DRLocHead(in_channels=4, variant='cbr', out_dim=7, num_pairs=32)
    assert head.use_abs and head.variant == 'gaussian' and head.row_fc.out_features == 7
    _, target = head(torch.randn(2, 4, 7, 7))
    assert target.min() >= 0 and target.max() <= 6
    signed = DRLocHead(in_channels=4, variant='cbr', out_dim=7, use_abs=False)
    assert signed.row_fc.out_features == 13
    # the project's centred layout stays available through grid_size
    centred = DRLocHead(in_channels=4, variant='ce', grid_size=7, use_abs=False, num_pairs=64)
    _, target = centred(torch.randn(2, 4, 3, 3))
    assert target.min() >= 6 - 2 and target.max() <= 6 + 2  # zero offset at bin g - 1 = 6


def test_swin_all_layers_per_stage_bins():
    """Official Swin use_multiscale: out_dim 56/28/14/7 on grids 28/14/7/7."""
    for out_dim, grid in ((56, 28), (28, 14), (14, 7), (7, 7)):
        for use_abs, bins in ((True, out_dim), (False, 2 * out_dim - 1)):
            head = DRLocHead(in_channels=4, variant='ce', out_dim=out_dim, use_abs=use_abs,
                             num_pairs=256)
            assert head.row_fc.out_features == bins
            _, target = head(torch.randn(1, 4, grid, grid))
            assert target.max() < bins and target.min() >= 0
            if not use_abs:  # targets delta + (grid - 1): the zero offset sits at bin grid - 1
                assert target.max() <= 2 * (grid - 1)
    with pytest.raises(ValueError, match='beyond the classifier range'):
        DRLocHead(in_channels=4, variant='ce', out_dim=7)(torch.randn(1, 4, 14, 14))


def test_variant_and_bin_options_errors():
    assert DRLocHead(in_channels=4, variant='l1', use_abs=False).variant == 'l1_signed'
    assert DRLocHead(in_channels=4, variant='l1_signed').use_abs is False
    with pytest.raises(ValueError, match="'l1_signed' regresses signed offsets"):
        DRLocHead(in_channels=4, variant='l1_signed', use_abs=True)
    with pytest.raises(ValueError, match='out_dim/grid_size set the bins'):
        DRLocHead(in_channels=4, variant='l1', out_dim=14)
    with pytest.raises(ValueError, match='out_dim .* or grid_size .*not both'):
        DRLocHead(in_channels=4, variant='ce', out_dim=14, grid_size=7)
    with pytest.raises(ValueError, match="'ce' needs out_dim, grid_size or pool_size"):
        DRLocHead(in_channels=4, variant='ce')
    with pytest.raises(ValueError, match='use_abs must be True, False or None'):
        DRLocHead(in_channels=4, use_abs='yes')


def test_schedule_total_is_the_schedules_own_length():
    """Official: training stops at epoch 100 of a 300-epoch lambda schedule."""
    head = DRLocHead(in_channels=4, loss_weight=0.5,
                     weight_schedule=dict(type='warmup_decay', warmup=20, total=300))
    hub = MessageHub.get_instance('drloc_total_test')
    hub.update_info('max_epochs', 101)
    for epoch, expected in ((0, 0.0), (10, 0.25), (20, 0.5), (100, 0.5 * (1 - 80 / 280))):
        hub.update_info('epoch', epoch)
        assert head.current_weight() == pytest.approx(expected)
    to_end = DRLocHead(in_channels=4, loss_weight=0.5, weight_schedule=dict(warmup=20))
    assert to_end.current_weight() == pytest.approx(0.5 * (1 - 80 / 81))  # total = max_epochs
    with pytest.raises(ValueError, match='total must be > warmup'):
        DRLocHead(in_channels=4, weight_schedule=dict(warmup=20, total=10))
    with pytest.raises(ValueError, match='unknown keys'):
        DRLocHead(in_channels=4, weight_schedule=dict(warmup=20, epochs=300))


def test_schedule_under_a_single_epoch_loop():
    hub = MessageHub.get_instance('drloc_iter_loop_test')
    hub.update_info('epoch', 0)  # IterBasedTrainLoop: one "epoch", 0 forever
    hub.update_info('max_epochs', 1)
    hub.update_info('iter', 30)
    hub.update_info('max_iters', 100)
    by_epoch = DRLocHead(in_channels=4, loss_weight=1.0, weight_schedule=dict(warmup=2))
    with pytest.raises(ValueError, match='reports a single epoch .*iters_per_epoch'):
        by_epoch.current_weight()
    # epochs counted from iterations: iter 30 // 10 = epoch 3 > warmup 2, total 100 / 10 epochs
    converted = DRLocHead(in_channels=4, loss_weight=1.0,
                          weight_schedule=dict(warmup=2, iters_per_epoch=10))
    assert converted.current_weight() == pytest.approx(1.0 - (3 - 2) / (10 - 2))
    by_iter = DRLocHead(in_channels=4, loss_weight=1.0,
                        weight_schedule=dict(warmup=20, total=120, by_epoch=False))
    assert by_iter.current_weight() == pytest.approx(1.0 - 10 / 100)
    with pytest.raises(ValueError, match='iters_per_epoch must be an integer >= 1'):
        DRLocHead(in_channels=4, weight_schedule=dict(iters_per_epoch=0))
    with pytest.raises(ValueError, match='needs by_epoch=True'):
        DRLocHead(in_channels=4, weight_schedule=dict(iters_per_epoch=5, by_epoch=False))


def _train_digits(tmp_path, schedule, max_iters=4):
    from mmengine.runner import Runner
    cfg = Config.fromfile(DIGITS)
    cfg.work_dir = str(tmp_path)
    cfg.model = dict(cfg.model, type='Regularized', host='ImageClassifier',
                     drloc=dict(num_pairs=16, variant='l1', loss_weight=0.5,
                                weight_schedule=schedule))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**9)
    cfg.param_scheduler = []
    cfg.train_dataloader.batch_size = 8
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader',
                'test_evaluator'):
        cfg[key] = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**9, by_epoch=False,
                                        save_last=False)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.message_hub.get_scalar('train/loss_drloc').data[0]


@pytest.mark.parametrize('schedule', [
    dict(type='warmup_decay', warmup=2, total=100, by_epoch=False),
    dict(type='warmup_decay', warmup=2, total=100, iters_per_epoch=1),
], ids=['iterations', 'epochs-from-iterations'])
def test_iteration_loop_runner_lambda_rises_after_warmup(tmp_path, schedule):
    """IterBasedTrainLoop keeps epoch 0: lambda must follow iterations, not stay 0."""
    logged = list(_train_digits(tmp_path, schedule))
    assert len(logged) == 4
    assert logged[0] == 0.0  # warm-up starts at 0
    assert all(v > 0 for v in logged[1:])  # lambda 0.25 at iteration 1, 0.5 from iteration 2


def test_iteration_loop_runner_refuses_an_epoch_schedule(tmp_path):
    with pytest.raises(ValueError, match='reports a single epoch'):
        _train_digits(tmp_path, dict(type='warmup_decay', warmup=20), max_iters=1)
