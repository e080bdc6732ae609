"""``atomic_write``: a failed or killed write leaves the previous file intact."""
import os

import pytest

from mmvitreg.utils.atomic_file import atomic_write, remove_stale_temp_files


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / 'last_checkpoint'
    atomic_write(path, 'old')

    def boom(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', boom)
    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, 'new content')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['last_checkpoint']  # the temporary file was removed


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f'.iter_2.pth.tmp-{dead}'
    mine = tmp_path / f'.iter_3.pth.tmp-{os.getpid()}'
    stale.write_bytes(b'half')
    mine.write_bytes(b'half')
    assert remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert mine.exists() and not stale.exists()
