"""The benchmark sections of the recipe docs, written from the presets themselves.

A markdown file marks each generated section; everything between the markers is rewritten::

    <!-- generated: benchmark cifar100_dropkey suite_dropkey_gpu -->
    ... (one section per named preset or suite of configs/benchmark) ...
    <!-- end generated -->

    <!-- generated: benchmark-index -->
    ... (one row per preset and suite of configs/benchmark: its questions) ...
    <!-- end generated -->

:func:`regenerate` returns a file's text with every section rewritten (raising
``FileNotFoundError`` for a marker naming a preset that does not exist);
``tools/analysis_tools/benchmark_docs.py`` writes or checks ``docs/recipes/*.md`` with it.
"""
import functools
import glob
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from .spec import BenchmarkSpec, Variant, load_spec, resolve_path
from .suite import SuiteSpec, load_suite

__all__ = ['describe_preset', 'describe_suite', 'describe', 'index', 'described_in', 'regenerate',
           'MARKER_RE']

MARKER_RE = re.compile(r'(<!-- generated: (benchmark(?:-index)?)([^>]*?)-->\n)(.*?)'
                       r'(<!-- end generated -->)', re.S)
_NOTE = ('*Generated from the presets by `python tools/analysis_tools/benchmark_docs.py`; edit '
         'the presets, not this section.*')


def _rel(path: str, root: str) -> str:
    return path if '::' in path else osp.relpath(path, root)


def _esc(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _overrides(options: Dict[str, object]) -> str:
    """``key=value`` per override (the key alone when the value is long)."""
    return ', '.join(f'`{k}={v!r}`' if len(repr(v)) <= 40 else f'`{k}`'
                     for k, v in options.items())


def _runs(spec: BenchmarkSpec, v: Variant, root: str) -> str:
    """What a variant trains: its config or the preset, a recipe, overrides, its description."""
    rel = osp.dirname(spec.path)
    parts = [f'`{_rel(resolve_path(v.config, rel), root)}`' if v.config else 'this preset']
    if v.recipe:
        parts.append(f'+ the recipe of `{_rel(resolve_path(v.recipe, rel), root)}`')
    if v.cfg_options:
        parts.append('+ ' + _overrides(v.cfg_options))
    return ' '.join(parts) + (f': {v.description}' if v.description else '')


def _seeds(seeds: Sequence[int]) -> str:
    return ', '.join(map(str, seeds))


def describe_preset(spec: BenchmarkSpec, root: str) -> str:
    """A preset's section: what it asks, what it trains, one row per comparison."""
    bases = [_rel(b if '::' in b else osp.abspath(osp.join(osp.dirname(spec.path), b)), root)
             for b in Config._get_base_files(spec.path)]
    out = [f'### `{_rel(spec.path, root)}`', '']
    if spec.description:
        out += [spec.description, '']
    common = _overrides(spec.cfg_options)
    out += [f"The preset inherits {', '.join(f'`{b}`' for b in bases) or 'no config'}; seeds "
            f'{_seeds(spec.seeds)}; metrics ' + ', '.join(f'`{m}`' for m in spec.metrics)
            + ' (the first decides)' + (f'; every variant overrides {common}' if common else '')
            + '.', '', '| variant | what it trains | compared with | question |',
            '|---|---|---|---|']
    baselines = spec.baselines()
    for v in spec.variants:
        own = baselines[v.name]
        refs = ([own] if own and own != v.name else []) + [r for r in v.questions if r != own]
        first = f'| `{v.name}` | {_esc(_runs(spec, v, root))} |'
        if not refs:
            out.append(f'{first} (reference) | |')
        for i, ref in enumerate(refs):
            q = spec.question(v.name, ref) or '(not declared)'
            out.append(f'{first if i == 0 else "| | |"} `{ref}` | {_esc(q)} |')
    return '\n'.join(out)


def describe_suite(suite: SuiteSpec, root: str) -> str:
    """A suite's section: its tasks (which preset variants) and its rows (one question each)."""
    out = [f'### `{_rel(suite.path, root)}` (suite)', '']
    if suite.description:
        out += [suite.description, '']
    out += ['Every task runs the variants ' + ', '.join(f'`{v}`' for v in suite.variants)
            + ' where its preset has them (suite name: preset variant).', '',
            '| task | preset | variants | seeds | overrides |', '|---|---|---|---|---|']
    for t in suite.tasks:
        names = ', '.join(f'`{s}`' if s == p else f'`{s}`: `{p}`' for s, p in t.sources.items())
        over = _overrides(t.spec.cfg_options) or '-'
        out.append(f'| `{t.name}` | `{_rel(t.spec.path, root)}` | {names} | '
                   f'{_seeds(t.spec.seeds)} | {over} |')
    out += ['', '| row | question (the same on every task of the row) | tasks |', '|---|---|---|']
    for c in suite.comparisons:
        tasks = ', '.join(f'`{t.name}`' for t in suite.tasks if t.has(c.variant, c.baseline))
        out.append(f'| `{c.variant}` vs `{c.baseline}` | {_esc(c.question)} | {tasks} |')
    return '\n'.join(out)


def _load(name: str, bench_dir: str) -> object:
    path = osp.join(bench_dir, name if name.endswith('.py') else f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'benchmark preset or suite not found: {path}')
    return _load_file(osp.abspath(path), osp.getmtime(path))


@functools.lru_cache(maxsize=64)
def _load_file(path: str, mtime: float) -> object:
    """A preset or suite, read once per version of the file (``mtime``)."""
    cfg = Config.fromfile(path, import_custom_modules=False)
    return load_suite(path, cfg) if 'suite' in cfg else load_spec(path)


def describe(name: str, bench_dir: str, root: str) -> str:
    """The section of the preset or suite ``name`` (a file of ``bench_dir``, ``.py`` optional)."""
    item = _load(name, bench_dir)
    return describe_suite(item, root) if isinstance(item, SuiteSpec) else \
        describe_preset(item, root)


def _questions(item: object) -> List[str]:
    if isinstance(item, SuiteSpec):
        return item.questions
    seen: Dict[str, None] = {}
    for v in item.variants:
        seen.update(dict.fromkeys(v.questions.values()))
    return list(seen)


def index(bench_dir: str, root: str, described: Optional[Dict[str, str]] = None) -> str:
    """One row per preset and suite of ``bench_dir``: kind, questions, the doc describing it."""
    out = ['| preset | kind | questions | described in |', '|---|---|---|---|']
    for path in sorted(glob.glob(osp.join(bench_dir, '*.py'))):
        name = osp.splitext(osp.basename(path))[0]
        item = _load(name, bench_dir)
        kind = 'suite' if isinstance(item, SuiteSpec) else 'preset'
        doc = (described or {}).get(name)
        out.append(f'| `{_rel(path, root)}` | {kind} | '
                   f"{'; '.join(_esc(q) for q in _questions(item)) or '-'} | "
                   f"{f'[{doc}]({doc})' if doc else '-'} |")
    return '\n'.join(out)


def described_in(docs: Sequence[str]) -> Dict[str, str]:
    """Preset name -> the first of ``docs`` (markdown files) whose markers name it."""
    out: Dict[str, str] = {}
    for doc in docs:
        with open(doc, encoding='utf-8') as f:
            for m in MARKER_RE.finditer(f.read()):
                for name in m.group(3).split() if m.group(2) == 'benchmark' else []:
                    out.setdefault(name, osp.basename(doc))
    return out


def regenerate(text: str, bench_dir: str, root: str,
               described: Optional[Dict[str, str]] = None) -> str:
    """``text`` with every generated section rewritten from the presets."""
    def section(m: 're.Match') -> str:
        if m.group(2) == 'benchmark-index':
            body = index(bench_dir, root, described)
        else:
            names = m.group(3).split()
            if not names:
                raise ValueError(f'{m.group(1).strip()} names no preset')
            body = '\n\n'.join(describe(n, bench_dir, root) for n in names)
        return f'{m.group(1)}{_NOTE}\n\n{body}\n\n{m.group(5)}'
    return MARKER_RE.sub(section, text)
