"""Benchmark suites: the same comparisons on several tasks, one cross-task table.

A suite is an mmengine config with one ``suite`` dict listing presets::

    suite = dict(
        variants=['baseline', 'dropout', 'dropkey'],  # the runs of every task; first: baseline
        seeds=[0, 1, 2],                              # default seeds of every task
        comparisons=[                                 # the table's rows (default: every variant
            dict(variant='dropkey',                   # vs the baseline, questions from presets)
                 question='DropKey vs no attention regularizer'),
            dict(variant='dropkey', baseline='dropout', question='DropKey vs attention dropout'),
        ],
        tasks=dict(
            digits=dict(preset='digits_regularizers.py',
                        variants=dict(dropkey='dropkey_decrease')),  # suite name -> preset name
            digit_scenes=dict(preset='digit_scenes_detection.py', seeds=[0, 1],
                              cfg_options={'train_cfg.max_epochs': 10}),
        ))

A suite variant a task does not map keeps its name in that preset; a task without one of the
variants leaves that cell empty. Every row is one comparison that asks one question: each task's
preset declares the question its comparison answers (a variant's ``question``: :mod:`.spec`),
and the suite refuses a row whose tasks ask different questions (e.g. DropKey against no
attention regularizer on one task and against attention dropout on another) or declare none, so
a row's aggregate never averages different questions. Task runs go to
``<work_dir>/<task>/<variant>/seed<k>``; each task also gets its own preset report there. The
cross-task table gives per task the paired Δ of the task's primary metric with its 95 % CI and
significance (Holm-adjusted over every cell of the table), and across the informative tasks two
aggregates, each with a stratified bootstrap 95 % CI (:mod:`.stats`): on the probability scale
the mean probability of improvement, and on the score scale the IQM of the paired differences
divided by the task's baseline std.
"""
import copy
import os
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from . import aggregate, stats
from .runner import _write_json, collect_results, runtime_note
from .spec import BenchmarkSpec, load_spec, resolve_path

__all__ = ['SuiteSpec', 'Task', 'Comparison', 'load_suite', 'suite_table',
           'uninformative_reason', 'write_suite_report']

_SUITE_KEYS = {'variants', 'seeds', 'tasks', 'description', 'bootstrap_reps', 'comparisons'}
_TASK_KEYS = {'preset', 'variants', 'seeds', 'cfg_options'}
_COMPARISON_KEYS = {'variant', 'baseline', 'question'}


@dataclass
class Task:
    name: str
    spec: BenchmarkSpec  # restricted to the suite's variants, renamed to the suite's names
    sources: Dict[str, str] = field(default_factory=dict)  # suite name -> the preset's name

    def has(self, *variants: str) -> bool:
        return all(v in self.sources for v in variants)


@dataclass
class Comparison:
    """One row of the suite table: ``variant`` vs ``baseline`` on every task that has both."""
    variant: str
    baseline: str
    question: str

    @property
    def label(self) -> str:
        return f'{self.variant} vs {self.baseline}'


@dataclass
class SuiteSpec:
    name: str
    path: str
    variants: List[str]
    tasks: List[Task] = field(default_factory=list)
    comparisons: List[Comparison] = field(default_factory=list)
    description: str = ''
    bootstrap_reps: int = 2000

    @property
    def baseline(self) -> str:
        return self.variants[0]

    @property
    def questions(self) -> List[str]:
        """The questions the suite asks, in the order of its comparisons."""
        return list(dict.fromkeys(c.question for c in self.comparisons))


def load_suite(path: str, cfg: Optional[Config] = None,
               seeds: Optional[Sequence[int]] = None) -> SuiteSpec:
    """Read a suite config; ``seeds`` (e.g. from the command line) override every task's.

    Raises (one line) when a comparison's tasks ask different questions or one declares none.
    """
    cfg = cfg or Config.fromfile(path, import_custom_modules=False)
    raw = cfg.get('suite')
    if not isinstance(raw, dict):
        raise KeyError(f'{path} is not a benchmark suite: it has no `suite = dict(tasks=...)`')
    raw = raw.to_dict() if hasattr(raw, 'to_dict') else dict(raw)
    bad = sorted(set(raw) - _SUITE_KEYS)
    if bad:
        raise KeyError(f'unknown key(s) {bad} in `suite` of {path}; allowed: {sorted(_SUITE_KEYS)}')
    names = list(raw.get('variants') or [])
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f'`suite.variants` of {path} must list variant names, the first being '
                         f'the baseline, got {names!r}')
    if not isinstance(raw.get('tasks'), dict) or not raw['tasks']:
        raise ValueError(f'`suite.tasks` of {path} must be a non-empty dict of '
                         "name -> dict(preset='...py', ...)")
    suite = SuiteSpec(osp.splitext(osp.basename(path))[0], osp.abspath(path), names,
                      description=raw.get('description', ''),
                      bootstrap_reps=int(raw.get('bootstrap_reps', 2000)))
    for tname, t in raw['tasks'].items():
        bad = sorted(set(t) - _TASK_KEYS) if isinstance(t, dict) else ['(not a dict)']
        if bad or 'preset' not in t:
            raise KeyError(f'suite task {tname!r} needs preset= and may have '
                           f'{sorted(_TASK_KEYS - {"preset"})}; got unknown {bad}')
        spec = load_spec(resolve_path(t['preset'], osp.dirname(osp.abspath(path))))
        suite.tasks.append(_task(tname, spec, dict(t.get('variants') or {}), names))
        spec.seeds = list(seeds or t.get('seeds') or raw.get('seeds') or spec.seeds)
        spec.cfg_options = dict(spec.cfg_options, **(t.get('cfg_options') or {}))
    suite.comparisons = _comparisons(suite, raw.get('comparisons'))
    return suite


def _task(name: str, spec: BenchmarkSpec, mapping: Dict[str, str],
          variants: Sequence[str]) -> Task:
    """``spec`` restricted to the suite's ``variants`` (``mapping``: suite name -> preset name),
    renamed to the suite's names, with the questions between them renamed alike."""
    available = [v.name for v in spec.variants]
    sources = {}
    for suite_name in variants:
        src = mapping.get(suite_name, suite_name)
        if src in available:
            sources[suite_name] = src
        elif suite_name in mapping:
            raise KeyError(f'suite task {name!r}: variant {src!r} (for {suite_name!r}) is not in '
                           f'{spec.path}; it has {available}')
    if variants[0] not in sources:
        raise ValueError(f'suite task {name!r}: preset {spec.path} has no variant for the '
                         f'baseline {variants[0]!r} (map it with variants=dict('
                         f"{variants[0]}='...'))")
    renamed = {src: suite_name for suite_name, src in reversed(list(sources.items()))}
    chosen = []
    for suite_name, src in sources.items():
        v = copy.deepcopy(spec.variant(src))
        v.name, v.baseline = suite_name, None
        v.questions = {renamed[ref]: q for ref, q in v.questions.items() if ref in renamed}
        chosen.append(v)
    spec.variants, spec.baseline = chosen, variants[0]
    return Task(name, spec, sources)


def _comparisons(suite: SuiteSpec, declared: Optional[Sequence[dict]]) -> List[Comparison]:
    """The suite's rows: ``declared`` (``dict(variant=, baseline=, question=)``) or every variant
    vs the baseline; each asks the one question that every task having it declares."""
    if declared is None:
        declared = [dict(variant=name) for name in suite.variants[1:]]
    out = []
    for item in declared:
        bad = sorted(set(item) - _COMPARISON_KEYS) if isinstance(item, dict) else ['(not a dict)']
        if bad or 'variant' not in item:
            raise KeyError(f'suite {suite.name}: each comparison is dict(variant=..., '
                           f'baseline=..., question=...); got unknown {bad} in {item!r}')
        name, ref = item['variant'], item.get('baseline') or suite.baseline
        if name not in suite.variants or ref not in suite.variants or name == ref:
            raise ValueError(f'suite {suite.name}: comparison {name} vs {ref} must name two '
                             f'different variants of {suite.variants}')
        asked = {t.name: (t.spec.question(name, ref), t) for t in suite.tasks if t.has(name, ref)}
        if not asked:
            raise ValueError(f'suite {suite.name}: no task has both {name!r} and {ref!r}')
        for tname, (q, t) in asked.items():
            if not q:
                raise ValueError(
                    f'suite {suite.name}, task {tname!r}: {t.spec.path} declares no question for '
                    f'{t.sources[name]} vs {t.sources[ref]}; add question=... to its variant '
                    f'{t.sources[name]!r}')
        question = item.get('question') or next(iter(asked.values()))[0]
        other = {tname: q for tname, (q, _) in asked.items() if q != question}
        if other:
            raise ValueError(
                f'suite {suite.name}: {name} vs {ref} asks {question!r}, but on '
                + ', '.join(f'{t} it asks {q!r}' for t, q in other.items())
                + '; a row aggregates one question: map the variants that ask it, or split '
                'the comparison')
        out.append(Comparison(name, ref, question))
    return out


def uninformative_reason(variant: Dict[int, float], baseline: Dict[int, float],
                         seeds: Sequence[int]) -> Optional[str]:
    """Why a task's comparison carries no information (``None`` when it does).

    A run that failed (or has no finite score) on one of the task's ``seeds``, or scores that
    are all the same for both variants (e.g. every run at 0 mAP): such a task would enter the
    cross-task aggregate as P(improve) = 0.5 with no variance, so it is flagged and left out.
    """
    missing = [s for s in seeds if s not in variant or s not in baseline]
    if missing:
        return f'failed or missing runs (seeds {missing})'
    values = [variant[s] for s in seeds] + [baseline[s] for s in seeds]
    if values and max(values) == min(values):
        return f'every run scores {values[0]:g}'
    return None


def _task_cell(spec: BenchmarkSpec, results: Sequence[dict], name: str, ref: str,
               reps: int) -> Tuple[dict, Optional[tuple], List[float]]:
    """One task's cell of ``name`` vs ``ref``: its statistics, its runs for the probability
    scale (``None`` when left out) and its normalised differences for the score scale."""
    m = spec.primary_metric
    sign = 1.0 if spec.higher_is_better else -1.0
    mine, base = stats.by_seed(results, name, m), stats.by_seed(results, ref, m)
    cmp = stats.paired_comparison(mine, base, spec.higher_is_better, alpha=spec.alpha, reps=reps)
    base_std = stats.describe(base.values())['std']
    scaled = bool(cmp['n']) and stats._finite(base_std) and base_std > 0
    norm = [sign * (mine[s] - base[s]) / base_std for s in cmp['seeds']] if scaled else []
    flag = uninformative_reason(mine, base, spec.seeds) or ''
    cell = dict(metric=m, n=cmp['n'], delta=cmp['delta'], ci_low=cmp['ci_low'],
                ci_high=cmp['ci_high'], p_value=cmp['p_value'], test=cmp['test'],
                p_holm=stats.NAN, prob_improvement=cmp['prob_improvement'],
                norm_delta=sum(norm) / len(norm) if norm else stats.NAN, sig='', flag=flag)
    if not cmp['n'] or flag:
        return cell, None, []
    runs = ([sign * v for v in mine.values()], [sign * v for v in base.values()])
    return cell, runs, norm


def suite_table(suite: SuiteSpec, work_dir: str) -> List[dict]:
    """One row per comparison (``question``, ``variant``, ``baseline``, ``comparison``): per
    task ``<task>/delta``, ``/ci_low``, ``/ci_high``, ``/p_value``, ``/test``, ``/p_holm``,
    ``/sig`` (from ``p_holm``), ``/prob_improvement``, ``/norm_delta`` (Δ / the baseline's std
    on the task, sign so that > 0 is better), ``/n``, ``/metric``, ``/flag`` (why the task is
    left out of the aggregates, '' when it is not: :func:`uninformative_reason`), ``/asked``
    (False where the task lacks one of the two variants: empty cell). Across the informative
    tasks: ``pi_mean``, ``pi_ci_low``, ``pi_ci_high``, ``pi_tasks``
    (:func:`.stats.stratified_bootstrap_pi`) and ``score_iqm``, ``score_ci_low``,
    ``score_ci_high``, ``score_mean``, ``score_tasks`` (:func:`.stats.stratified_bootstrap_iqm`
    of the per-pair normalised differences; the mean over tasks of ``norm_delta``; tasks whose
    baseline std is 0 or undefined are left out of the score scale). Every task of a row asks
    the row's question (:func:`load_suite` checks it). Holm's adjustment runs over every
    (comparison, task) cell with a p-value."""
    per_task = {t.name: collect_results(t.spec, osp.join(work_dir, t.name))[1]
                for t in suite.tasks}
    rows = []
    reps = suite.bootstrap_reps
    for c in suite.comparisons:
        row, runs, scores = dict(question=c.question, comparison=c.label, variant=c.variant,
                                 baseline=c.baseline), [], []
        for task in suite.tasks:
            asked = task.has(c.variant, c.baseline)
            cell, task_runs, norm = _task_cell(task.spec, per_task[task.name] if asked else [],
                                               c.variant, c.baseline, reps)
            cell['flag'] = cell['flag'] if asked else ''
            row.update({f'{task.name}/{k}': v for k, v in dict(cell, asked=asked).items()})
            if asked and task_runs:
                runs.append(task_runs)
                if norm:
                    scores.append(norm)
        pi, lo, hi = stats.stratified_bootstrap_pi(runs, True, reps=reps)
        row.update(pi_mean=pi, pi_ci_low=lo, pi_ci_high=hi, pi_tasks=len(runs))
        score, slo, shi = stats.stratified_bootstrap_iqm(scores, reps=reps)
        row.update(score_iqm=score, score_ci_low=slo, score_ci_high=shi,
                   score_mean=(sum(sum(z) / len(z) for z in scores) / len(scores)
                               if scores else stats.NAN), score_tasks=len(scores))
        rows.append(row)
    # one family: every (comparison, task) cell (holm_adjust leaves cells without a p out of it)
    cells = [(row, t) for row in rows for t in suite.tasks]
    for (row, t), adj in zip(cells, stats.holm_adjust([r[f'{t.name}/p_value'] for r, t in cells])):
        if stats._finite(adj):
            row[f'{t.name}/p_holm'] = adj
    for row in rows:
        for t in suite.tasks:
            if row[f'{t.name}/n']:
                row[f'{t.name}/sig'] = stats.significance_label(row[f'{t.name}/p_holm'],
                                                                t.spec.alpha)
    return rows


def _cell(row: dict, task: str, digits: int) -> str:
    if not row.get(f'{task}/asked', True):
        return 'n/a'
    d = row.get(f'{task}/delta')
    if not stats._finite(d):
        return '- [left out: uninformative]' if row.get(f'{task}/flag') else '-'
    lo, hi = row[f'{task}/ci_low'], row[f'{task}/ci_high']
    ci = f' [{lo:+.{digits}f}, {hi:+.{digits}f}]' if stats._finite(lo) else ''
    exact = aggregate.EXACT_MARK if row.get(f'{task}/test') in ('exact', 'permutation') else ''
    cell = f"{d:+.{digits}f}{ci} {row[f'{task}/sig']}{exact} (n={row[f'{task}/n']})"
    return cell + (' [left out: uninformative]' if row.get(f'{task}/flag') else '')


def write_suite_report(suite: SuiteSpec, work_dir: str, notes: Sequence[str] = (),
                       plots: bool = True) -> Dict[str, str]:
    """``suite.md``, ``suite.csv``, ``suite.json`` and ``suite_forest.png`` in ``work_dir``."""
    rows = suite_table(suite, work_dir)
    tasks = [t.name for t in suite.tasks]
    header = ['question', 'comparison'] + [f'{t.name}: Δ {t.spec.primary_metric} [95% CI]'
                                           for t in suite.tasks] + [
        'P(improve), mean over tasks [95% CI]',
        'Δ / baseline std: IQM over runs × tasks [95% CI]; mean over tasks']
    body = []
    for r in rows:
        cells = [r['question'], r['comparison']]
        for t in suite.tasks:
            digits = 3 if 'mAP' in t.spec.primary_metric else 2
            cells.append(_cell(r, t.name, digits))
        pi = r['pi_mean']
        cells.append('-' if not stats._finite(pi) else f'{pi:.2f}' + (
            f" [{r['pi_ci_low']:.2f}, {r['pi_ci_high']:.2f}]" if stats._finite(r['pi_ci_low'])
            else '') + f" ({r['pi_tasks']} tasks)")
        sc = r['score_iqm']
        cells.append('-' if not stats._finite(sc) else f'{sc:+.2f}' + (
            f" [{r['score_ci_low']:+.2f}, {r['score_ci_high']:+.2f}]"
            if stats._finite(r['score_ci_low']) else '') + f"; {r['score_mean']:+.2f}"
            + f" ({r['score_tasks']} tasks)")
        body.append(cells)
    family = sum(stats._finite(r[f'{t}/p_value']) for r in rows for t in tasks)
    where = runtime_note([r for t in suite.tasks
                          for r in collect_results(t.spec, osp.join(work_dir, t.name))[1]])
    md = [f'## Suite {suite.name} asks: {"; ".join(suite.questions)}', '',
          *([where, ''] if where else []),
          aggregate._md_table(header, body, 'll' + 'r' * (len(header) - 2)), '',
          'One row per comparison; each asks its question on every task it has a cell for (the '
          'presets declare it; n/a: the task lacks one of the two variants), so its aggregate '
          'never averages different questions. '
          'Per task: mean paired difference (variant - baseline, same seeds) of the task\'s '
          'primary metric, t-based 95 % CI (none when every difference is the same), n = pairs, '
          'significance from Holm\'s (1979) family-wise adjustment over the table\'s '
          f'{family} (comparison, task) p-values (* p (Holm) < 0.05, '
          '** p (Holm) < 0.01, n.s.); raw p is two-sided, from the paired t-test '
          f'(scipy.stats.ttest_rel) from {stats.MIN_PAIRS_TTEST} pairs on when the differences '
          f'vary, else ({aggregate.EXACT_MARK}) from the exact paired permutation test over all '
          '2^n sign flips (scipy.stats.permutation_test), never 0 (raw and adjusted p: suite.csv). '
          'Across the tasks not flagged below, two aggregates with stratified percentile bootstrap '
          f'95 % CIs ({suite.bootstrap_reps} resamples of the runs within each task and variant, '
          'scipy.stats.bootstrap, fixed seed; Agarwal et al. 2021): on the probability scale '
          'P(improve), the probability that a run of the variant beats a run of the baseline over '
          'all pairs of runs (ties 1/2; Mann-Whitney U / (n m)), averaged over tasks; on the score '
          'scale the paired differences divided by the task\'s baseline std (sign: > 0 is '
          'better), their interquartile mean over runs × tasks (scipy.stats.trim_mean(x, 0.25)) '
          'and the mean over tasks of their per-task means.']
    flagged = [f"{t}: {r['comparison']}: {r[f'{t}/flag']}" for r in rows for t in tasks
               if r.get(f'{t}/flag')]
    if flagged:
        md += ['', 'Left out of the aggregate (their runs carry no information): '
               + '; '.join(flagged) + '.']
    md += [''] + list(notes) if notes else []
    md = '\n'.join(md) + '\n'
    paths = dict(markdown_file=osp.join(work_dir, 'suite.md'),
                 csv=osp.join(work_dir, 'suite.csv'), json=osp.join(work_dir, 'suite.json'))
    os.makedirs(work_dir, exist_ok=True)
    with open(paths['markdown_file'], 'w') as f:
        f.write(md)
    cols = ['question', 'variant', 'baseline'] + [f'{t}/{k}' for t in tasks for k in (
        'asked', 'metric', 'n', 'delta', 'ci_low', 'ci_high', 'p_value', 'test', 'p_holm', 'sig',
        'prob_improvement', 'norm_delta', 'flag')] + [
        'pi_mean', 'pi_ci_low', 'pi_ci_high', 'pi_tasks', 'score_iqm', 'score_ci_low',
        'score_ci_high', 'score_mean', 'score_tasks']
    with open(paths['csv'], 'w') as f:
        f.write(aggregate.to_csv(rows, cols))
    _write_json(paths['json'], dict(suite=suite.path, baseline=suite.baseline, tasks=tasks,
                                    questions=suite.questions, rows=rows))
    if plots and rows:
        try:
            from .plots import plot_suite
            paths['forest_plot'] = plot_suite(rows, tasks, osp.join(work_dir, 'suite_forest.png'),
                                              title=f'Suite {suite.name}')
        except Exception as exc:  # pragma: no cover - depends on the matplotlib install
            print(f'warning: suite plot not written: {type(exc).__name__}: {exc}', file=sys.stderr)
    paths['markdown'] = md
    return paths
