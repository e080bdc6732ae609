"""Bad input ends with one clear ``error:`` line naming the problem; a failure inside the training
loop keeps its traceback. In-process ``main(argv)`` calls (the subprocess path of the tools is
covered by ``test_train_test_tools.py``)."""
import re

import pytest

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, run_main
from tests._helpers.failing_hook import MESSAGE


def _error_line(capsys, tool: str, args) -> str:
    with pytest.raises(SystemExit) as exc:
        run_main(tool, args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, err[-2000:]
    assert 'Traceback' not in err
    return lines[0]


def test_unknown_config_path(capsys):
    line = _error_line(capsys, 'train', ['configs/no/such_config.py'])
    assert 'config file not found: configs/no/such_config.py' in line
    line = _error_line(capsys, 'test', ['configs/no/such.py', 'x.pth'])
    assert 'config file not found' in line


def test_unknown_type_in_config(tmp_path, capsys):
    line = _error_line(capsys, 'train', [
        DIGITS_CONFIG, '--work-dir', tmp_path, '--cfg-options', 'model.backbone.type=Regularizd'])
    assert "unknown type 'Regularizd'" in line and 'custom_imports' in line


def test_missing_dataset_directory(tmp_path, capsys):
    cfg = tmp_path / 'missing_data.py'
    cfg.write_text(f"""_base_ = {DIGITS_CONFIG!r}
train_dataloader = dict(dataset=dict(_delete_=True, type='CustomDataset',
                        data_root='/nonexistent/imagenet',
                        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
""")
    line = _error_line(capsys, 'train', [cfg, '--work-dir', tmp_path])
    assert 'not found: /nonexistent/imagenet' in line


def test_missing_checkpoint_for_test(tmp_path, capsys):
    line = _error_line(capsys, 'test', [DIGITS_CONFIG, tmp_path / 'none.pth'])
    assert 'checkpoint file not found' in line


def test_cfg_options_with_a_space_instead_of_equals(tmp_path, capsys):
    line = _error_line(capsys, 'train', [DIGITS_CONFIG, '--work-dir', tmp_path,
                                         '--cfg-options', 'train_cfg.max_epochs', '1'])
    assert line.startswith("error: --cfg-options takes key=value pairs, got "
                           "'train_cfg.max_epochs' without '='")
    assert 'write train_cfg.max_epochs=1' in line
    # "key= value": the fix joins the two words
    line = _error_line(capsys, 'test', [DIGITS_CONFIG, 'x.pth', '--cfg-options',
                                        'test_dataloader.batch_size=', '8'])
    assert 'write test_dataloader.batch_size=8' in line


def test_cfg_options_with_a_dict_value(tmp_path, capsys):
    line = _error_line(capsys, 'train', [
        DIGITS_CONFIG, '--work-dir', tmp_path, '--cfg-options',
        "model.backbone.dropkey=dict(ratio=0.1, schedule='decrease')"])
    assert 'cannot take a dict as a value' in line
    assert "model.backbone.dropkey.ratio=0.1 model.backbone.dropkey.schedule='decrease'" in line
    line = _error_line(capsys, 'train', [DIGITS_CONFIG, '--cfg-options',
                                         'model.backbone.dropkey={"ratio": 0.1}'])
    assert 'set its keys one by one: model.backbone.dropkey.ratio=0.1' in line


def test_cfg_options_suggestion_works(tmp_path):
    """The key-by-key form the dict message suggests is accepted and reaches the config."""
    from mmengine.config import Config
    work = tmp_path / 'work'
    run_main('train', [DIGITS_CONFIG, '--work-dir', work, '--cfg-options',
                       'train_cfg.max_epochs=1', 'model.backbone.dropkey.ratio=0.1',
                       "model.backbone.dropkey.schedule='decrease'",
                       'model.backbone.type=Regularized',
                       'model.backbone.host=mmpretrain.VisionTransformer',
                       *TINY_DIGITS_OPTIONS, 'val_dataloader.dataset.num_samples=8'])
    dumped = Config.fromfile(str(work / 'vit-tiny-p4_1xb32-15e_digits-16px.py'))
    assert dumped.model.backbone.dropkey == dict(ratio=0.1, schedule='decrease')


def test_failure_inside_training_keeps_its_traceback(tmp_path, capsys):
    cfg = tmp_path / 'failing.py'
    cfg.write_text(f"""_base_ = {DIGITS_CONFIG!r}
custom_imports = dict(imports=['mmvitreg', 'tests._helpers.failing_hook'])
custom_hooks = [dict(type='FailingHook')]
""")
    # a ValueError, the same type as input errors, but raised once training runs: it propagates
    # (the interpreter prints its traceback) instead of becoming an `error:` line
    with pytest.raises(ValueError, match=re.escape(MESSAGE)):
        run_main('train', [cfg, '--work-dir', tmp_path, '--cfg-options',
                           'train_cfg.max_epochs=1', *TINY_DIGITS_OPTIONS])
    assert 'error: ' not in capsys.readouterr().err


def test_drloc_epoch_schedule_on_an_iteration_loop_is_refused_before_training(tmp_path, capsys):
    """DRLoc's epoch-counted lambda schedule cannot advance on IterBasedTrainLoop (one epoch):
    one ``error:`` line before the first iteration, not a traceback from inside the loop."""
    cfg = tmp_path / 'drloc_iter.py'
    cfg.write_text(f"""_base_ = {DIGITS_CONFIG!r}
model = dict(type='Regularized', host='ImageClassifier',
             drloc=dict(num_pairs=8, loss_weight=0.5, weight_schedule=dict(warmup=2)))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=3, val_interval=1000)
param_scheduler = []
""")
    line = _error_line(capsys, 'train', [cfg, '--work-dir', tmp_path, '--cfg-options',
                                         *TINY_DIGITS_OPTIONS])
    assert 'DRLoc weight_schedule counts epochs' in line and 'max_epochs=1' in line
    assert not list(tmp_path.glob('**/iter_*.pth'))
