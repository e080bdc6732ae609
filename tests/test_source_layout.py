"""Files of one concern: no file of the package grows past 500 lines."""
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'mmvitreg'


def test_no_package_file_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob('*.py')
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
