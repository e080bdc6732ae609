"""Bad input ends with one clear ``error:`` line naming the problem."""
from tests._helpers import DIGITS_CONFIG, run_tool


def _error_line(res) -> str:
    assert res.returncode == 1, res.stderr[-2000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith('error: ')]
    assert len(lines) == 1, res.stderr[-2000:]
    assert 'Traceback' not in res.stderr
    return lines[0]


def test_unknown_config_path(tmp_path):
    line = _error_line(run_tool(['tools/train.py', 'configs/no/such_config.py']))
    assert 'config file not found: configs/no/such_config.py' in line
    line = _error_line(run_tool(['tools/test.py', 'configs/no/such.py', 'x.pth']))
    assert 'config file not found' in line


def test_unknown_type_in_config(tmp_path):
    line = _error_line(run_tool([
        'tools/train.py', DIGITS_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
        'model.backbone.type=Regularizd']))
    assert "unknown type 'Regularizd'" in line and 'custom_imports' in line


def test_missing_dataset_directory(tmp_path):
    cfg = tmp_path / 'missing_data.py'
    cfg.write_text(f"""_base_ = {DIGITS_CONFIG!r}
train_dataloader = dict(dataset=dict(_delete_=True, type='CustomDataset',
                        data_root='/nonexistent/imagenet',
                        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
""")
    line = _error_line(run_tool(['tools/train.py', str(cfg), '--work-dir', str(tmp_path)]))
    assert 'not found: /nonexistent/imagenet' in line


def test_missing_checkpoint_for_test(tmp_path):
    line = _error_line(run_tool(['tools/test.py', DIGITS_CONFIG, str(tmp_path / 'none.pth')]))
    assert 'checkpoint file not found' in line
