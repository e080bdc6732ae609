"""DropKeyScheduleHook: final phase without DropKey, epoch/iter based, wrappers and resume."""
import os.path as osp
import types

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmvitreg  # noqa: F401
from mmvitreg.engine.hooks.dropkey_hook import DropKeyScheduleHook
from mmvitreg.ops.dropkey import DropKey, dropkey_modules

DIGITS_CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                         'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py')


class _Wrapper(nn.Module):  # DDP-like: the real model under `.module`
    def __init__(self, module):
        super().__init__()
        self.module = module


def _fake_runner(model, **kw):
    logger = types.SimpleNamespace(info=lambda *a: None, warning=lambda *a: None)
    return types.SimpleNamespace(model=model, logger=logger, epoch=0, iter=0, max_epochs=10,
                                 max_iters=100, **kw)


def test_errors():
    with pytest.raises(ValueError, match='exactly one of last_epochs or last_iters'):
        DropKeyScheduleHook()
    with pytest.raises(ValueError, match='exactly one of last_epochs or last_iters'):
        DropKeyScheduleHook(last_epochs=1, last_iters=5)
    with pytest.raises(ValueError, match='last_iters must be an integer >= 0, got -1'):
        DropKeyScheduleHook(last_iters=-1)


@pytest.mark.parametrize('wrap', [False, True])
def test_switches_off_in_final_epochs_and_after_resume(wrap, monkeypatch):
    monkeypatch.setattr('mmvitreg.engine.hooks.dropkey_hook.is_model_wrapper',
                        lambda m: isinstance(m, _Wrapper))
    model = nn.Sequential(DropKey(0.2), DropKey(0.1))
    runner = _fake_runner(_Wrapper(model) if wrap else model)
    hook = DropKeyScheduleHook(last_epochs=2)
    hook.before_train(runner)
    states = []
    for epoch in range(10):
        runner.epoch = epoch
        hook.before_train_iter(runner, 0)
        states.append(all(m.enabled for m in dropkey_modules(model)))
    assert states == [True] * 8 + [False] * 2
    # resume inside the final phase: a fresh hook switches off at the first iteration
    for m in dropkey_modules(model):
        m.enabled = True
    hook2 = DropKeyScheduleHook(last_epochs=2)
    runner.epoch = 9
    hook2.before_train(runner)
    hook2.before_train_iter(runner, 0)
    assert not any(m.enabled for m in dropkey_modules(model))


def test_iteration_based_final_phase():
    model = nn.Sequential(DropKey(0.2))
    runner = _fake_runner(model)
    hook = DropKeyScheduleHook(last_iters=30)
    hook.before_train(runner)
    for it, want in ((0, True), (69, True), (70, False), (99, False)):
        runner.iter = it
        hook.before_train_iter(runner, 0)
        assert model[0].enabled is want


class _Recorder(Hook):
    priority = 'LOW'

    def __init__(self):
        self.states = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.states.append(all(m.enabled for m in dropkey_modules(runner.model)))


def test_in_a_real_runner(tmp_path):
    from tests._helpers import tiny_dropkey_digits_config
    cfg = tiny_dropkey_digits_config(dict(ratio=0.2), batch_size=8,
                                     train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=100))
    cfg.work_dir = str(tmp_path)
    cfg.custom_hooks = [dict(type='DropKeyScheduleHook', last_epochs=1)]
    runner = Runner.from_cfg(cfg)
    rec = _Recorder()
    runner.register_hook(rec)
    runner.train()
    assert rec.states == [True, True, False]


def test_validation_after_the_final_phase_uses_the_test_estimator(tmp_path, monkeypatch):
    """After the no-DropKey phase, in-process validation samples ``mc_samples`` passes exactly as
    ``tools/test.py`` does on the saved checkpoint (same number of stochastic DropKey calls)."""
    from mmvitreg.ops.dropkey import module as dk_module
    from tests._helpers import run_main

    calls = {'n': 0}
    original = dk_module.DropKey.forward

    def counting_forward(self, *args, **kwargs):
        if self.active:
            calls['n'] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dk_module.DropKey, 'forward', counting_forward)

    class ValCounter(Hook):
        priority = 'LOW'

        def __init__(self):
            self.val_calls = []

        def before_val(self, runner):
            self.start = calls['n']

        def after_val(self, runner):
            self.val_calls.append(calls['n'] - self.start)

    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.work_dir = str(tmp_path)
    cfg.model = dict(cfg.model, type='Regularized', host='ImageClassifier',
                     dropkey=dict(ratio=0.3, mc_samples=3))
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=2, num_heads=2,
                                   feedforward_channels=64)
    cfg.model.head.in_channels = 32
    cfg.train_dataloader.dataset.num_samples = 16
    cfg.train_dataloader.batch_size = 8
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'].dataset.num_samples = 16
        cfg[f'{split}_dataloader'].batch_size = 8
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=4,
                                        save_best=None)
    cfg.log_processor = dict(by_epoch=False)
    cfg.custom_hooks = [dict(type='DropKeyScheduleHook', last_iters=2)]
    config_path = str(tmp_path / 'mc_phase.py')
    cfg.dump(config_path)
    runner = Runner.from_cfg(Config.fromfile(config_path))
    counter = ValCounter()
    runner.register_hook(counter)
    rec = _Recorder()
    runner.register_hook(rec)
    runner.train()
    assert rec.states == [True, True, False, False]  # the final phase trained without DropKey
    # validation ran after the phase and sampled (3 passes per batch through every layer)
    assert len(counter.val_calls) == 1 and counter.val_calls[0] > 0
    assert counter.val_calls[0] % 3 == 0
    # a fresh tools/test.py on the checkpoint uses the same estimator
    calls['n'] = 0
    run_main('test', [config_path, osp.join(str(tmp_path), 'iter_4.pth'),
                      '--work-dir', str(tmp_path / 'test')])
    assert calls['n'] == counter.val_calls[0]
