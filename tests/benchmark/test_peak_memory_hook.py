import json
from types import SimpleNamespace

import pytest
from mmengine.logging import MessageHub

from mmvitreg.engine.hooks import PeakMemoryHook
from mmvitreg.engine.hooks.peak_memory_hook import process_peak_rss_mb
from mmvitreg.registry import HOOKS


def test_registered_in_both_scopes():
    assert 'PeakMemoryHook' in HOOKS
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmpretrain.registry import HOOKS as CLS_HOOKS
    assert DET_HOOKS.get('PeakMemoryHook') is CLS_HOOKS.get('PeakMemoryHook') is PeakMemoryHook


def test_logs_running_peak_and_writes_json(tmp_path):
    hub = MessageHub.get_instance('test_peak_memory_hook')
    runner = SimpleNamespace(message_hub=hub, log_dir=str(tmp_path))
    hook = PeakMemoryHook()
    hook.after_train_iter(runner, 0)
    first = hub.get_scalar('train/peak_rss_mb').current()
    assert first > 10  # MiB: a Python process with torch loaded is far above that
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b'1' * len(block[::4096])  # touch the pages so they count as resident
    hook.after_train_iter(runner, 1)
    second = hub.get_scalar('train/peak_rss_mb').current()
    assert second >= first and second >= process_peak_rss_mb() - 1
    hook.after_run(runner)
    data = json.loads((tmp_path / 'peak_memory.json').read_text())
    assert data['device'] in ('cpu', 'cuda') and data['peak_rss_mb'] >= second
    del block


def test_bad_out_file():
    with pytest.raises(ValueError, match='PeakMemoryHook out_file must be a file name or None'):
        PeakMemoryHook(out_file=3)
