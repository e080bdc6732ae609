"""``tools/analysis_tools/dropkey_triton_build.py``: the shipped calls' Triton kernels built
for a GPU this machine does not have, with one-line errors for bad input."""
import json

import pytest

from mmvitreg.ops.dropkey.triton_flash import triton_available
from tests._helpers import run_main

TOOL = 'analysis_tools/dropkey_triton_build'
pytestmark = pytest.mark.skipif(not triton_available(), reason='no Triton')


def test_builds_the_kernels_of_a_call_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'builds.json'
    run_main(TOOL, ['--arch', '90', '--call', 'detr-decoder-cross', '--json', out])
    printed = capsys.readouterr().out
    assert '4 kernels, 0 with spilled registers (stack > 0), 0 failed' in printed
    rows = json.loads(out.read_text())
    assert [r['kernel'] for r in rows] == ['forward', 'forward', 'backward_kv', 'backward_q']
    assert all(r['call'] == 'detr-decoder-cross' and r['arch'] == 90 and r['fits'] for r in rows)


def test_a_config_that_does_not_fit_exits_1(capsys):
    code = run_main(TOOL, ['--call', 'plainvit-window', '--config', '128', '128', '8', '2'])
    printed = capsys.readouterr().out
    assert code == 1 and 'does not fit' in printed


@pytest.mark.parametrize('args, message', [
    (['--arch', '61'], 'unknown --arch [61]'),
    (['--call', 'swin'], "unknown --call ['swin']"),
    (['--config', '48', '16'], 'config must be'),
])
def test_bad_input_is_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(TOOL, args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
