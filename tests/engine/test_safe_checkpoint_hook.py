"""``SafeCheckpointHook`` never loses the last good checkpoint: a kill mid-save keeps the previous
one (and ``last_checkpoint`` names a complete file), an automatic resume without
``last_checkpoint`` restores the newest complete checkpoint (or refuses in one line), and resuming
a copied run folder never deletes the original run's files."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from mmvitreg.utils.cli import use_safe_checkpoint_hook
from mmvitreg.utils.resume import ResumeError, checkpoint_problem, find_resume_checkpoint
from tests.engine._tiny_runner import StartIter, tiny_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Trains 3 iterations saving each (max_keep_ckpts=1); the write of iter_2.pth (or of its
# temporary file) writes half its bytes, then the process dies at once (no cleanup runs).
KILLED_SAVE = textwrap.dedent('''
    import builtins, os, sys
    sys.path.insert(0, {repo!r})
    from mmengine.hooks import CheckpointHook
    from tests.engine._tiny_runner import tiny_runner
    real_open = builtins.open

    class Dying:
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            os._exit(9)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def __getattr__(self, name):
            return getattr(self.f, name)

    def dying_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if 'w' in mode and 'iter_2.pth' in os.path.basename(str(file)):
            return Dying(f)
        return f

    builtins.open = dying_open
    stock = CheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    tiny_runner(sys.argv[1], 3, hook=stock if sys.argv[2] == 'stock' else None).train()
''')


def _kill_during_second_save(work_dir: str, hook: str = 'safe') -> None:
    script = osp.join(osp.dirname(work_dir), 'killed_save.py')
    with open(script, 'w') as f:
        f.write(KILLED_SAVE.format(repo=REPO))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, script, work_dir, hook], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]


def test_kill_mid_save_keeps_previous_checkpoint(tmp_path):
    work = str(tmp_path / 'run')
    _kill_during_second_save(work)
    first = osp.join(work, 'iter_1.pth')
    assert checkpoint_problem(first) is None
    assert torch.load(first, map_location='cpu', weights_only=False)['meta']['iter'] == 1
    with open(osp.join(work, 'last_checkpoint')) as f:
        recorded = f.read().strip()
    assert osp.basename(recorded) == 'iter_1.pth' and checkpoint_problem(recorded) is None
    assert not osp.exists(osp.join(work, 'iter_2.pth'))  # never a half-written final name
    leftovers = [n for n in os.listdir(work) if '.tmp-' in n]
    assert leftovers  # the killed write's temporary file ...
    start = StartIter()
    tiny_runner(work, 3, resume=True, extra_hooks=[start]).train()
    assert start.start == 1  # ... and the run resumes from iteration 1
    assert not [n for n in os.listdir(work) if '.tmp-' in n]  # stale temporary file removed
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_3.pth']


def test_stock_checkpoint_hook_loses_everything(tmp_path):
    """The failure SafeCheckpointHook exists for (documents the simulation is realistic)."""
    work = str(tmp_path / 'run')
    _kill_during_second_save(work, 'stock')
    assert not osp.exists(osp.join(work, 'iter_1.pth'))
    assert checkpoint_problem(osp.join(work, 'iter_2.pth')) is not None


def _train_three(work: str) -> None:
    hook_args = dict(interval=1, by_epoch=False, max_keep_ckpts=-1)
    from mmvitreg.engine.hooks import SafeCheckpointHook
    tiny_runner(work, 3, hook=SafeCheckpointHook(**hook_args)).train()


def _truncate(path: str) -> None:
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def test_resume_without_last_checkpoint_uses_newest_complete(tmp_path):
    work = str(tmp_path / 'run')
    _train_three(work)
    os.remove(osp.join(work, 'last_checkpoint'))
    _truncate(osp.join(work, 'iter_3.pth'))  # the newest is damaged: skipped
    start = StartIter()
    tiny_runner(work, 4, resume=True, extra_hooks=[start]).train()
    assert start.start == 2  # not 0: mmengine alone silently starts over here


def test_resume_refuses_when_no_checkpoint_is_complete(tmp_path):
    work = str(tmp_path / 'run')
    _train_three(work)
    os.remove(osp.join(work, 'last_checkpoint'))
    for i in (1, 2, 3):
        _truncate(osp.join(work, f'iter_{i}.pth'))
    with pytest.raises(ResumeError) as exc:
        tiny_runner(work, 4, resume=True).train()
    assert len(str(exc.value).splitlines()) == 1 and 'no complete checkpoint' in str(exc.value)
    assert find_resume_checkpoint(str(tmp_path / 'empty')) is None  # nothing at all: fresh start


def _snapshot(folder: str) -> dict:
    return {n: os.stat(osp.join(folder, n)).st_mtime_ns for n in os.listdir(folder)
            if osp.isfile(osp.join(folder, n))}


def test_resuming_a_copied_run_never_deletes_the_original(tmp_path):
    original, copy = str(tmp_path / 'a'), str(tmp_path / 'b')
    tiny_runner(original, 2, save_best='score').train()
    before = _snapshot(original)
    assert any(n.startswith('best_score') for n in before)
    shutil.copytree(original, copy)
    start = StartIter()
    tiny_runner(copy, 4, resume=True, save_best='score', extra_hooks=[start]).train()
    assert start.start == 2
    assert _snapshot(original) == before  # nothing of the original run deleted or rewritten
    names = os.listdir(copy)
    assert 'iter_4.pth' in names and 'iter_2.pth' not in names  # the copy's own are rotated
    assert len([n for n in names if n.startswith('best_score')]) == 1
    with open(osp.join(copy, 'last_checkpoint')) as f:
        assert osp.dirname(f.read().strip()) == copy


def test_use_safe_checkpoint_hook_swaps_plain_checkpoint_hooks():
    from mmengine.config import Config
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3))))
    use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint == dict(type='SafeCheckpointHook', interval=3)
    cfg = Config(dict(default_hooks=dict(logger=dict(type='LoggerHook'))))
    use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    cfg = Config(dict(default_hooks=dict(checkpoint=None)))
    use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint is None


def test_registered_in_both_toolboxes_and_named_by_shipped_configs():
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmpretrain.registry import HOOKS as CLS_HOOKS

    from mmvitreg.engine.hooks import SafeCheckpointHook
    for registry in (CLS_HOOKS, DET_HOOKS):
        assert isinstance(registry.build(dict(type='SafeCheckpointHook', interval=2)),
                          SafeCheckpointHook)
    plain = [osp.join(root, f) for root, _, files in os.walk(osp.join(REPO, 'configs'))
             for f in files
             if f.endswith('.py') and "type='CheckpointHook'" in open(osp.join(root, f)).read()]
    assert not plain, f'shipped configs with a plain CheckpointHook: {plain}'
