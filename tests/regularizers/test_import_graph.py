"""The package's layers import one way: ``ops`` (torch only) <- ``regularizers`` (how mechanisms
reach hosts) <- ``models`` (the OpenMMLab types). Checked on the source with ``ast``, so an
upward import anywhere in a file (also inside a function) fails, and no forward hook is left in
the attachment layer (sites only)."""
import ast
import os.path as osp
import pathlib
from typing import Iterator, Tuple

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'mmvitreg'


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``."""
    package = _module_name(path)
    if path.name != '__init__.py':
        package = package.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from . import x` imports the submodule x
                yield node.lineno, f'{base}.{alias.name}'


def _files(sub: str):
    return sorted((PACKAGE / sub).rglob('*.py'))


def test_the_resolver_sees_relative_and_nested_imports(tmp_path):
    assert ('mmvitreg.regularizers.attention' in
            {m for _, m in imports_of(PACKAGE / 'regularizers' / 'stages' / 'dropkey.py')})
    assert 'mmvitreg.ops.dropkey' in {m for _, m in imports_of(
        PACKAGE / 'regularizers' / 'stages' / 'attention_dropout.py')}


@pytest.mark.parametrize('layer, forbidden', [
    ('regularizers', ('mmvitreg.models', 'mmvitreg.datasets', 'mmvitreg.engine',
                      'mmvitreg.evaluation', 'mmvitreg.apis', 'mmvitreg.benchmark')),
    ('ops', ('mmvitreg.regularizers', 'mmvitreg.models', 'mmvitreg.registry', 'mmengine',
             'mmcv', 'mmdet', 'mmpretrain')),
])
def test_no_upward_imports(layer, forbidden):
    bad = [f'{osp.relpath(path, PACKAGE)}:{line} imports {name}'
           for path in _files(layer) for line, name in imports_of(path)
           if any(name == f or name.startswith(f + '.') for f in forbidden)]
    assert not bad, bad


def test_no_forward_hooks_in_the_attachment_layer():
    hooks = ('register_forward_hook', 'register_forward_pre_hook', 'register_full_backward_hook',
             'register_module_forward_hook', 'register_module_forward_pre_hook')
    found = [f'{osp.relpath(path, PACKAGE)}:{node.lineno} {node.attr}'
             for path in _files('regularizers') for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in hooks]
    assert not found, found
