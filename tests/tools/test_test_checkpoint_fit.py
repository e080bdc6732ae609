"""tools/test.py refuses, in one line, a checkpoint that leaves model tensors unloaded (mmengine
alone would only log a warning and evaluate partly random weights); ``--allow-partial-checkpoint``
evaluates anyway and says how much was not loaded."""
import torch
from mmengine.config import Config

from mmvitreg.utils.checkpoint_fit import checkpoint_fit
from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, run_tool


def _digits_state() -> dict:
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmvitreg  # noqa: F401
    init_default_scope('mmpretrain')
    return MODELS.build(Config.fromfile(DIGITS_CONFIG).model).state_dict()


def test_checkpoint_fit_counts():
    model = {'a': torch.zeros(2), 'b': torch.zeros(3), 'c': torch.zeros(1)}
    fit = checkpoint_fit(model, {'module.a': torch.ones(2), 'b': torch.ones(4), 'x': torch.ones(1)})
    assert fit == (['c'], ['x'], ['b'], 3)


def test_test_tool_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    state = _digits_state()
    dropped = sorted(state)[0]
    partial = {k: v for k, v in state.items() if k != dropped}
    ckpt = str(tmp_path / 'partial.pth')
    torch.save(dict(state_dict=partial), ckpt)
    args = ['tools/test.py', DIGITS_CONFIG, ckpt, '--work-dir', str(tmp_path / 'test'),
            '--cfg-options', *TINY_DIGITS_OPTIONS]
    res = run_tool(args)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert f'1 of {len(state)} model tensors not loaded' in last and dropped in last
    assert 'accuracy/top1' not in res.stdout + res.stderr

    res = run_tool(args[:3] + ['--allow-partial-checkpoint'] + args[3:])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f'WARNING: checkpoint {ckpt} does not fit the model: 1 of {len(state)}' in res.stdout
    assert 'accuracy/top1' in res.stdout + res.stderr
