"""The recipe records (docs/recipes/*.md) agree with the configs they describe.

Every markdown table whose header row is exactly :data:`HEADER` is parsed; each row names a config
(path from the repo root), a dotted key into the loaded config (integers index lists) and the
Python literal the config must hold there. A config that drifts from its record fails here.
"""
import ast
import functools
import glob
import math
import os.path as osp
import re
from typing import Any, List, NamedTuple

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECIPES = osp.join(REPO, 'docs', 'recipes')
HEADER = '| config | key | value | official source | official value | note |'
_CELL_SPLIT = re.compile(r'(?<!\\)\|')


class Row(NamedTuple):
    md: str       # file name under docs/recipes
    line: int     # 1-based line number
    config: str   # repo-relative path
    key: str
    value: str    # Python literal


def _unquote(cell: str) -> str:
    cell = cell.strip().replace('\\|', '|')
    if len(cell) >= 2 and cell.startswith('`') and cell.endswith('`'):
        cell = cell[1:-1]
    return cell.strip()


def parse_records(path: str) -> List[Row]:
    """Rows of every recipe table in one markdown file."""
    rows, lines = [], open(path, encoding='utf-8').read().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != HEADER:
            i += 1
            continue
        i += 2  # header + separator
        while i < len(lines) and lines[i].strip().startswith('|'):
            cells = _CELL_SPLIT.split(lines[i].strip())[1:-1]
            if len(cells) != 6:
                raise ValueError(f'{osp.basename(path)}:{i + 1}: a recipe row needs 6 cells, '
                                 f'got {len(cells)}: {lines[i]!r}')
            rows.append(Row(osp.basename(path), i + 1, _unquote(cells[0]), _unquote(cells[1]),
                            _unquote(cells[2])))
            i += 1
    return rows


def _record_files() -> List[str]:
    return sorted(p for p in glob.glob(osp.join(RECIPES, '*.md'))
                  if osp.basename(p) != 'README.md')


ALL_ROWS = [row for path in _record_files() for row in parse_records(path)]


@functools.lru_cache(maxsize=None)
def load_config(config: str):
    import mmvitreg  # noqa: F401  (registers the types some configs resolve at load time)
    from mmengine.config import Config
    return Config.fromfile(osp.join(REPO, config))


_MISSING = object()


def resolve(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split('.'):
        if isinstance(node, (list, tuple)):
            if not re.fullmatch(r'-?\d+', part) or not -len(node) <= int(part) < len(node):
                return _MISSING
            node = node[int(part)]
        elif hasattr(node, 'keys'):
            if part not in node:
                return _MISSING
            node = node[part]
        else:
            return _MISSING
    return node


def _plain(value: Any) -> Any:
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def same(actual: Any, expected: Any) -> bool:
    """Equality with floats compared approximately and lists/tuples alike; bools stay bools."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-15)
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(same(actual[k], expected[k])
                                                        for k in actual)
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    return type(actual) is type(expected) and actual == expected


def test_parser_reads_cells_with_escaped_pipes(tmp_path):
    md = tmp_path / 'x.md'
    md.write_text('prose\n\n' + HEADER + '\n|---|---|---|---|---|---|\n'
                  '| `a.py` | `k.0` | `\'x\\|y\'` | repo `f.py` | 1 | |\n\nafter | not a row\n')
    assert parse_records(str(md)) == [Row('x.md', 5, 'a.py', 'k.0', "'x|y'")]
    assert same([1, (2.0, 3)], [1, [2, 3]]) and not same(True, 1) and not same('1', 1)
    assert resolve({'a': [{'b': 5}]}, 'a.0.b') == 5 and resolve({'a': []}, 'a.0') is _MISSING


@pytest.mark.parametrize('path', _record_files(), ids=osp.basename)
def test_every_record_file_has_rows_and_is_indexed(path):
    rows = parse_records(path)
    assert rows, f'{osp.basename(path)}: no table with the header {HEADER!r}'
    index = open(osp.join(RECIPES, 'README.md'), encoding='utf-8').read()
    assert f']({osp.basename(path)})' in index, \
        f'docs/recipes/README.md does not link {osp.basename(path)}'


def test_index_links_exist():
    index = open(osp.join(RECIPES, 'README.md'), encoding='utf-8').read()
    links = re.findall(r'\]\(([^)#]+\.md)\)', index)
    assert links
    for link in links:
        assert osp.isfile(osp.join(RECIPES, link)), f'docs/recipes/README.md links missing {link}'


@pytest.mark.parametrize('row', ALL_ROWS, ids=[f'{r.md}:{r.line}' for r in ALL_ROWS])
def test_record_config_exists(row):
    assert osp.isfile(osp.join(REPO, row.config)), \
        f'{row.md}:{row.line}: config {row.config} does not exist'


@pytest.mark.parametrize('row', ALL_ROWS, ids=[f'{r.md}:{r.line}:{r.key}' for r in ALL_ROWS])
def test_config_holds_recorded_value(row):
    where = f'{row.md}:{row.line}: {row.config} key {row.key}'
    try:
        expected = ast.literal_eval(row.value)
    except (ValueError, SyntaxError) as exc:
        raise AssertionError(f'{where}: value {row.value!r} is not a Python literal') from exc
    actual = resolve(load_config(row.config), row.key)
    assert actual is not _MISSING, f'{where}: key not found in the loaded config'
    actual = _plain(actual)
    assert same(actual, _plain(expected)), \
        f'{where}: config has {actual!r}, the record says {expected!r}'
