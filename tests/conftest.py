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
