import os
import os.path as osp

import pytest

from tests._helpers import DIGITS_CONFIG, REPO, TINY_DIGITS_OPTIONS, run_main


def pytest_collection_modifyitems(config, items):
    """Slow tests run only with MMVITREG_SLOW=1 (or when selected explicitly with -m slow)."""
    if os.environ.get('MMVITREG_SLOW') or 'slow' in (config.getoption('-m') or ''):
        return
    skip = pytest.mark.skip(reason='slow: set MMVITREG_SLOW=1 to run')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo_root() -> str:
    return REPO


@pytest.fixture(scope='session')
def digits_run(tmp_path_factory) -> dict:
    """One tiny digits training run (1 epoch with validation, in-process ``tools/train.py``),
    shared by the tests that need a real mmengine checkpoint: ``work_dir``, ``checkpoint``
    (``epoch_1.pth``: weights, optimizer, message hub, meta)."""
    work = str(tmp_path_factory.mktemp('digits_run'))
    run_main('train', [DIGITS_CONFIG, '--work-dir', work, '--cfg-options',
                       'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                       *TINY_DIGITS_OPTIONS])
    return dict(work_dir=work, checkpoint=osp.join(work, 'epoch_1.pth'))


@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Each test starts without a default scope or visualizer, as in a fresh process, and leaks
    no mmengine global instance (scope, visualizer, logger, message hub) to later tests.

    mmengine keeps these in process-wide registries (the latest instance wins; an instance is
    reused by name, and runner names are timestamps to the second), so a test that builds a
    Runner would otherwise change how unprefixed type names resolve, which visualizer a hook
    draws with, or which logged scalars a later run of the same config in the same second sees.
    """
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    from tests._helpers import fresh_mmengine_globals
    with fresh_mmengine_globals():
        for cls in (DefaultScope, Visualizer):
            cls._instance_dict.clear()
        yield
