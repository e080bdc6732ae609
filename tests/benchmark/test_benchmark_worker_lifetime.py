"""Benchmark workers die with the tool (SIGKILL, SIGTERM, SIGHUP of the tool), and a run's lock
excludes a second trainer while a worker of a killed tool still runs (a dead holder's lock is
taken over)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmvitreg.benchmark import LaunchOptions, execute_all, load_spec, plan_runs
from tests._helpers import BENCHMARK_BASE_CONFIG as BASE
from tests._helpers import FAKE_WORKER as FAKE
from tests._helpers import REPO

PRESET = """
_base_ = ['base.py']
benchmark = dict(seeds=[0], metrics=['accuracy/top1'], variants=dict(baseline=dict()))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='Linux signals')


@pytest.fixture
def preset(tmp_path):
    (tmp_path / 'base.py').write_text(BASE)
    (tmp_path / 'preset.py').write_text(textwrap.dedent(PRESET))
    return tmp_path


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait(cond, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _starts(tmp_path) -> list:
    path = tmp_path / 'calls.jsonl'
    return [r for r in map(json.loads, path.read_text().splitlines()) if 'start' in r] \
        if path.exists() else []


def _start_tool(tmp_path, **env_extra) -> subprocess.Popen:
    """The benchmark tool on the preset; its one run hangs (FAKE_SLOW) once started."""
    env = dict(os.environ, BENCH_CALLS=str(tmp_path / 'calls.jsonl'), OMP_NUM_THREADS='1',
               MMVITREG_BENCHMARK_WORKER=f'{sys.executable} {FAKE}', FAKE_SLOW='seed0',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), **env_extra)
    cmd = [sys.executable, '-m', 'mmvitreg.benchmark', str(tmp_path / 'preset.py'),
           '--work-dir', str(tmp_path / 'wd'), '--no-plots']
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _worker_pid(tmp_path, tool: subprocess.Popen) -> int:
    ckpt = tmp_path / 'wd' / 'baseline' / 'seed0' / 'last_checkpoint'
    if not _wait(lambda: _starts(tmp_path) and ckpt.exists() or tool.poll() is not None, 240):
        tool.kill()
        pytest.fail('the worker did not start')
    assert tool.poll() is None, tool.communicate()[0]
    return _starts(tmp_path)[0]['pid']


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_worker_dies_with_the_tool(preset, sig):
    tool = _start_tool(preset)
    pid = _worker_pid(preset, tool)
    try:
        assert _running(pid)
        tool.send_signal(sig)
        assert _wait(lambda: not _running(pid), 10), f'worker {pid} survived {sig.name}'
        out, _ = tool.communicate(timeout=60)
        if sig != signal.SIGKILL:  # a clean stop: the run stays resumable, one clear line
            assert tool.returncode == 128 + sig, out
            assert 'interrupted: rerun the same command' in out and sig.name in out
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
        if tool.poll() is None:
            tool.kill()


def test_run_lock_excludes_a_second_trainer(preset, monkeypatch):
    # a worker that outlives its killed tool (its parent-death signal cleared) ...
    tool = _start_tool(preset, FAKE_IMMORTAL='1')
    pid = _worker_pid(preset, tool)
    spec = load_spec(str(preset / 'preset.py'))
    wd = str(preset / 'wd')
    monkeypatch.setenv('BENCH_CALLS', str(preset / 'calls.jsonl'))
    opts = LaunchOptions(jobs=1, cpus=1, devices=[], worker=[sys.executable, FAKE], poll_s=0.02,
                         progress_every_s=0.0)
    lines = []
    try:
        tool.kill()
        tool.communicate(timeout=60)
        assert _running(pid)
        # ... still holds the run's lock: a second launch does not train the run concurrently
        counts = execute_all([(spec, r) for r in plan_runs(spec, wd)], opts,
                             printer=lines.append)
        assert counts == dict(ok=0, failed=0, skipped=1), lines
        assert 'running in another process' in '\n'.join(lines)
        assert len(_starts(preset)) == 1
    finally:
        os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not _running(pid), 10)
    # once no live process holds it, the lock is taken over and the run resumes
    counts = execute_all([(spec, r) for r in plan_runs(spec, wd)], opts, printer=lines.append)
    assert counts['ok'] == 1, lines
    starts = _starts(preset)
    assert len(starts) == 2 and starts[1]['resume'] is True
