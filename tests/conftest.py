import os

import pytest

from tests._helpers import REPO


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

@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Each test starts without a default scope, as in a fresh process, and cannot leak one.

    mmengine keeps the default scope in a process-wide registry (the latest ``DefaultScope``
    instance wins), so a test that builds an mmdet Runner would otherwise change how unprefixed
    type names resolve in every later test.
    """
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    DefaultScope._instance_dict.clear()
    try:
        yield
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(saved)
