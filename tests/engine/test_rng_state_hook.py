"""RNGStateHook: generator states of every rank go into the checkpoint and come back by rank."""
import io
import os
import random
import types

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.hooks import CheckpointHook

from mmvitreg.engine.hooks.rng_state_hook import RNGStateHook, capture_rng_state, restore_rng_state
from mmvitreg.ops.dropkey import get_seed, get_step


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())),
            float(torch.randn(())))


def _fake_runner(**kw):
    logger = types.SimpleNamespace(info=lambda *a: None, warning=lambda *a: None)
    ckpt = CheckpointHook(interval=1, by_epoch=False)
    kw.setdefault('train_loop', types.SimpleNamespace(max_iters=10))
    return types.SimpleNamespace(hooks=[ckpt], logger=logger, iter=4, epoch=0, seed=123, **kw)


def test_capture_restore_roundtrip_and_safe_loading():
    state = capture_rng_state()
    a = _draws()
    restore_rng_state(state)
    assert _draws() == a
    # the payload is tensors and plain values: torch's safe loader reads it
    buf = io.BytesIO()
    torch.save(dict(rng_state=dict(world_size=1, states=[state])), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)['rng_state']['states'][0]
    restore_rng_state(loaded)
    assert _draws() == a


def test_single_process_save_load_and_step(monkeypatch):
    hook = RNGStateHook()
    runner = _fake_runner()
    ckpt = {}
    random.seed(1)
    hook.before_save_checkpoint(runner, ckpt)
    after_save = _draws()
    assert ckpt['rng_state']['world_size'] == 1
    # a resumed run: seeds differently, loads the checkpoint; epoch-based loop -> restored in
    # before_train
    random.seed(2)
    torch.manual_seed(5)
    hook2 = RNGStateHook()
    hook2.after_load_checkpoint(runner, ckpt)
    hook2.before_train(runner)
    assert get_seed() == 123 and get_step() == 4
    assert _draws() == after_save
    hook2.before_train_iter(runner, 0)
    assert get_step() == 4


def test_iteration_loop_restores_after_the_skipped_batches():
    calls = []

    class Loader:
        def __next__(self):
            calls.append(float(torch.rand(())))  # e.g. random augmentation in the main process
            return len(calls)

    loop = types.SimpleNamespace(dataloader_iterator=Loader())
    runner = _fake_runner(train_loop=loop)
    runner.iter = 3
    state = capture_rng_state()
    expected = float(torch.rand(()))  # what the uninterrupted run draws for batch 3
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, dict(rng_state=dict(world_size=1, states=[state])))
    torch.manual_seed(0)  # mmengine re-seeds the resumed run
    hook.before_train(runner)
    for _ in range(3):  # mmengine skips the batches already trained
        next(loop.dataloader_iterator)
    next(loop.dataloader_iterator)
    assert calls[-1] == expected
    assert isinstance(loop.dataloader_iterator, Loader)  # unwrapped after the restore


def test_validation_does_not_consume_the_training_stream():
    hook = RNGStateHook()
    runner = _fake_runner()
    hook.before_train(runner)
    state = capture_rng_state()
    expected = _draws()
    restore_rng_state(state)
    hook.before_val(runner)
    _draws()  # validation draws
    hook.after_val(runner)
    assert _draws() == expected


def _rank_main(rank, world, port, path):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        runner = _fake_runner()
        torch.manual_seed(100 + rank)
        random.seed(100 + rank)
        hook = RNGStateHook()
        hook.after_train_iter(runner, 0)  # all ranks: gathered where a checkpoint is due
        mine = _draws()  # what this rank draws after the checkpoint
        if rank == 0:
            ckpt = {}
            hook.before_save_checkpoint(runner, ckpt)  # only rank 0 writes the file
            torch.save(ckpt, path)
        dist.barrier()
        ckpt = torch.load(path, weights_only=True)
        assert ckpt['rng_state']['world_size'] == world
        torch.manual_seed(0)
        random.seed(0)  # the resumed run is seeded identically on every rank
        hook2 = RNGStateHook()
        hook2.after_load_checkpoint(runner, ckpt)
        hook2.before_train(runner)
        assert _draws() == mine, f'rank {rank} did not get its own state back'
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_every_rank_saves_and_restores_its_own_state(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, port, str(tmp_path / 'ckpt.pth')), nprocs=2, join=True)
