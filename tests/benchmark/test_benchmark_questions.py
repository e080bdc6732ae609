"""Every comparison of a shipped preset declares its question, the question is true of what the
runs train (attention-weight dropout, DropKey, DRLoc in the run configs), and every row of a
shipped suite asks one question on every task, all read with the project's real spec loader."""
import glob
import os.path as osp
from typing import Tuple

import pytest

from mmvitreg.benchmark import build_run_config, load_spec, load_suite

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FILES = sorted(glob.glob(osp.join(REPO, 'configs', 'benchmark', '*.py')))
SUITES = [p for p in FILES if '\nsuite = dict(' in open(p).read()]
PRESETS = [p for p in FILES if p not in SUITES]
NONE = 'no attention regularizer'


def _regularizers(cfg) -> Tuple[float, bool, bool]:
    """(largest attention-weight dropout, DropKey on, DRLoc on) of a run config's model."""
    found = dict(drop=0.0, dropkey=False, drloc=False)

    def walk(node, key=''):
        if isinstance(node, (list, tuple)):
            for item in node:
                walk(item, key)
        if not isinstance(node, dict):
            return
        for k, v in node.items():
            if k in ('dropkey', 'drloc') and v:
                found[k] = True
            elif k in ('attn_drop_rate', 'attn_drop') or (k == 'dropout' and
                                                           key.endswith('attn_cfg')):
                found['drop'] = max(found['drop'], float(v))
            elif k == 'attention_dropout' and v:
                found['drop'] = max(found['drop'], float(v['ratio']))
            walk(v, k)

    walk(cfg.model.to_dict())
    return found['drop'], found['dropkey'], found['drloc']


# what a question claims about (variant, reference): their (dropout, dropkey, drloc)
CLAIMS = {
    f'DropKey vs {NONE}': lambda v, r: v[:2] == (0.0, True) and r[:2] == (0.0, False),
    'DropKey vs attention dropout': lambda v, r: v[:2] == (0.0, True) and r[0] > 0 and not r[1],
    f'attention dropout vs {NONE}': lambda v, r: v[0] > 0 and not v[1] and r[:2] == (0.0, False),
    'DropKey + attention dropout vs attention dropout':
        lambda v, r: v[0] == r[0] > 0 and v[1] and not r[1],
    'DRLoc vs no DRLoc': lambda v, r: v[2] and not r[2] and v[:2] == r[:2],
}


def test_the_file_lists_are_what_they_say():
    assert {osp.basename(p) for p in SUITES} == {
        'suite_digits_cpu.py', 'suite_dropkey_gpu.py', 'suite_drloc_gpu.py'}
    assert len(PRESETS) == 10


@pytest.mark.parametrize('path', PRESETS, ids=osp.basename)
def test_every_comparison_declares_a_question_that_its_runs_answer(path):
    spec = load_spec(path)
    runs = {}

    def regs(name):
        if name not in runs:
            runs[name] = _regularizers(build_run_config(spec, spec.variant(name), 0))
        return runs[name]

    for v in spec.variants:
        own = spec.baselines()[v.name]
        if own and own != v.name:
            assert spec.question(v.name, own), f'{v.name} vs {own} declares no question'
        for ref, question in v.questions.items():
            if question in CLAIMS:
                assert CLAIMS[question](regs(v.name), regs(ref)), \
                    f'{v.name} vs {ref} claims {question!r}: {regs(v.name)} vs {regs(ref)}'


def test_detr_and_qpic_ask_the_questions_of_the_vit_presets():
    """The review finding: on COCO/HICO-DET `dropkey` was DropKey + attention dropout against
    the stock attention dropout, on CIFAR/IN-1k DropKey against nothing."""
    for name in ('coco_detr_dropkey.py', 'hico_qpic_dropkey.py', 'cifar100_dropkey.py',
                 'in1k_dropkey.py'):
        spec = load_spec(osp.join(REPO, 'configs', 'benchmark', name))
        assert spec.question('dropkey', 'baseline') == f'DropKey vs {NONE}', name
        assert spec.question('dropkey', 'dropout') == 'DropKey vs attention dropout', name
        assert spec.question('dropout', 'baseline') == f'attention dropout vs {NONE}', name


@pytest.mark.parametrize('path', SUITES, ids=osp.basename)
def test_every_row_of_a_shipped_suite_asks_one_question_on_every_task(path):
    suite = load_suite(path)
    expected = {
        'suite_dropkey_gpu': [f'DropKey vs {NONE}', 'DropKey vs attention dropout',
                              f'attention dropout vs {NONE}'],
        'suite_drloc_gpu': ['DRLoc vs no DRLoc'],
        'suite_digits_cpu': [f'DropKey vs {NONE}', 'DRLoc vs no DRLoc'],
    }[suite.name]
    assert suite.questions == expected
    for c in suite.comparisons:
        for task in suite.tasks:
            assert task.has(c.variant, c.baseline), f'{task.name} lacks {c.label}'
            preset = load_spec(task.spec.path)  # as the preset itself declares it
            src, ref = task.sources[c.variant], task.sources[c.baseline]
            assert preset.question(src, ref) == c.question, f'{task.name}: {src} vs {ref}'
            assert c.question in CLAIMS
            runs = [_regularizers(build_run_config(task.spec, task.spec.variant(n), 0))
                    for n in (c.variant, c.baseline)]
            assert CLAIMS[c.question](*runs), f'{task.name}: {c.label}: {runs}'
