"""The benchmark sections of docs/recipes/*.md are what the presets generate (a stale section or
one naming a missing preset fails), and every config path the recipe docs name exists."""
import glob
import os.path as osp
import re
import subprocess
import sys

import pytest

from mmvitreg.benchmark.docs import MARKER_RE, described_in, regenerate

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(REPO, 'configs', 'benchmark')
DOCS = sorted(glob.glob(osp.join(REPO, 'docs', 'recipes', '*.md')))
TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_docs.py')


@pytest.mark.parametrize('doc', DOCS, ids=osp.basename)
def test_generated_sections_are_up_to_date(doc):
    text = open(doc, encoding='utf-8').read()
    assert regenerate(text, BENCH, REPO, described_in(DOCS)) == text, \
        f'{osp.relpath(doc, REPO)} is stale: run python tools/analysis_tools/benchmark_docs.py'


def test_every_preset_and_suite_is_indexed_and_the_gpu_ones_described():
    text = '\n'.join(open(d, encoding='utf-8').read() for d in DOCS)
    assert len(MARKER_RE.findall(text)) >= 7
    shipped = {osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(BENCH, '*.py'))}
    described = described_in(DOCS)
    assert set(described) == shipped  # every preset and suite has its section in some doc
    assert described['coco_detr_dropkey'] == 'dropkey.md'
    for name in shipped:
        assert f'| `configs/benchmark/{name}.py` |' in text


def test_config_paths_named_by_the_recipe_docs_exist():
    for doc in DOCS:
        text = open(doc, encoding='utf-8').read()
        for path in set(re.findall(r'(?<![\w/])configs/[\w./-]+\.py', text)):
            assert osp.isfile(osp.join(REPO, path)), f'{osp.basename(doc)} names {path}'


def test_stale_or_unknown_sections_are_caught(tmp_path):
    doc = open(osp.join(REPO, 'docs', 'recipes', 'deepvit.md'), encoding='utf-8').read()
    stale = doc.replace('Re-attention vs self-attention', 'Re-attention vs nothing', 1)
    assert stale != doc and regenerate(stale, BENCH, REPO) == doc
    with pytest.raises(FileNotFoundError, match='no_such_preset'):
        regenerate('<!-- generated: benchmark no_such_preset -->\n<!-- end generated -->\n',
                   BENCH, REPO)
    # the tool: --check reports a stale file and writes nothing; without it, rewrites it
    path = tmp_path / 'deepvit.md'
    path.write_text(stale)
    res = subprocess.run([sys.executable, TOOL, str(path), '--check'], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1 and 'stale' in res.stdout and path.read_text() == stale
    res = subprocess.run([sys.executable, TOOL, str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert res.returncode == 0 and path.read_text() == doc
