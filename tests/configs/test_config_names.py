"""Shipped configs follow OpenMMLab's file naming scheme."""
import re
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
# {algorithm}_{backbone}_..._{gpus}xb{batch}[-{schedule}]_{data}.py, or mmdet's `_1x_` schedules
SCHEME = re.compile(
    r'^[a-z0-9][a-z0-9.-]*(_[a-z0-9.-]+)*_(\d+xb\d+(-[a-z0-9.]+)?|\d+x)_[a-z0-9.-]+\.py$')


def _model_configs():
    return [p for p in CONFIGS.glob('*/*.py')
            if p.parent.name not in ('_base_', 'benchmark') and not p.name.startswith('_')]


def test_every_model_config_names_gpus_batch_and_data():
    configs = _model_configs()
    assert len(configs) > 40
    off = sorted(str(p.relative_to(CONFIGS)) for p in configs if not SCHEME.match(p.name))
    assert off == []


def test_the_scheme_rejects_the_old_names():
    for name in ('detr_r50_dropkey_coco.py', 'vit-small-p4_32px_cifar100.py',
                 'qpic_tiny_hico-mini.py', 'deit-small_dropkey_in1k.py'):
        assert not SCHEME.match(name)


def test_every_metafile_entry_points_at_an_existing_config():
    import yaml
    for meta in CONFIGS.glob('*/metafile.yml'):
        for model in yaml.safe_load(meta.read_text())['Models']:
            path = CONFIGS.parent / model['Config']
            assert path.is_file(), (meta, model['Config'])
            assert model['Name'] == path.stem, (meta, model['Name'])
