"""benchmarks/bench_pipeline.py runs end to end with tiny settings and prints its table."""
import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_pipeline.py'


def load():
    spec = importlib.util.spec_from_file_location('bench_pipeline', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_prints_every_row_and_column(tmp_path, capsys):
    bench = load()
    table = bench.main(['--quick', '--images', '2', '--repeats', '1', '--size', '48', '64',
                        '--work-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert '| ' + ' | '.join(bench.COLUMNS) + ' |' in out
    assert [row['pipeline'] for row in table] == [r[0] for r in bench.ROWS]
    for row in table:
        assert set(row) == set(bench.COLUMNS)
        assert float(row['ms/sample']) > 0 and float(row['ratio']) > 0
        if row['config'] != '-':
            assert int(row['workers/GPU']) >= 1 and int(row['batch/GPU']) >= 1
    assert list(tmp_path.iterdir()) == []  # generated data removed


def test_only_selects_rows_and_bad_arguments_exit(tmp_path):
    bench = load()
    table = bench.main(['--images', '1', '--repeats', '1', '--size', '48', '64',
                        '--only', 'jitter', '--work-dir', str(tmp_path)])
    assert [row['anchor'] for row in table] == ['torchvision ColorJitter(.4,.4,.4), PIL'] * 2
    with pytest.raises(SystemExit):
        bench.parse_args(['--repeats', '0'])
