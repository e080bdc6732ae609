"""Benchmark presets: which runs, which variants, which seeds, which metrics.

A preset is an ordinary mmengine config: it inherits (``_base_``) the baseline's training config,
may override it like any config, and adds one ``benchmark`` dict. ``tools/train.py PRESET``
trains the baseline; the benchmark tool reads ``benchmark``::

    _base_ = ['../vit/vit-tiny-p4_1xb32-15e_digits-16px.py']
    train_cfg = dict(val_interval=1)              # any override: it is the baseline's config
    benchmark = dict(
        seeds=[0, 1, 2, 3, 4],                    # one run per (variant, seed)
        metrics=['accuracy/top1'],                # test-result keys; the first is the primary
        baseline='baseline',                      # default: the first variant
        variants=dict(
            baseline=dict(),                      # the preset itself
            dropkey=dict(cfg_options={'model.backbone.type': 'Regularized', ...}),
            detr_dropkey=dict(recipe='../dropkey/detr_r50_dropkey_8xb2-150e_coco.py'),
            deit=dict(config='../deit/deit.py'),  # a whole other config
        ))

Each comparison (a variant against its baseline) declares the question it answers, so a table
says what it measures and a suite (:mod:`.suite`) aggregates only comparisons that ask the same
question: ``question='DropKey vs no attention regularizer'`` (against the variant's baseline), or
a dict naming the reference variants, e.g. ``question=dict(baseline='DropKey vs no attention
regularizer', dropout='DropKey vs attention dropout')`` (the further comparisons are what suites
can ask too). The question is metadata: it never enters a run's config.

A variant starts from ``config`` (a whole config) or from the preset itself, then applies in
order: ``recipe`` (what that config changes relative to its own ``_base_``, so a preset reuses the
project's regularizer configs instead of restating them), the benchmark's ``cfg_options`` (for
every variant), the variant's ``cfg_options``, command-line overrides and ``randomness.seed``;
the :class:`~mmvitreg.engine.hooks.PeakMemoryHook` is appended. Paths are relative to the preset
(as ``_base_``) or ``mmdet::``/``mmpretrain::`` package configs.

Further ``benchmark`` keys: ``higher_is_better`` (default True), ``test`` (test the final
checkpoint, default True; otherwise the last validation is the result), ``test_checkpoint``
(``'last'``/``'best'``), ``alpha`` (significance level, 0.05), a variant's own ``baseline``,
``prepare`` (``dict(fn='pkg.mod.func', kwargs=..., skip_if_exists=path)`` steps run once first,
e.g. writing a generated data set), ``description`` (one line on what the preset asks; the
recipe docs quote it: :mod:`.docs`), ``resources`` (``dict(gpu_hours_per_epoch=..,
checkpoint_gb=.., source='..')``: what ``--dry-run`` estimates a plan needs from, see
:mod:`.resources`).

A run that selects on its validation score (``test_checkpoint='best'``, an ``EarlyStoppingHook``)
needs a validation set held out from the test set: where ``val_dataloader`` and
``test_dataloader`` read the same data, or the result is the last validation (``test=False``),
the preset (and any run config) is refused, since the score would be chosen on the data it is
reported on.
"""
import copy
import hashlib
import json
import os.path as osp
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from mmengine.config import Config

__all__ = ['Variant', 'BenchmarkSpec', 'RunSpec', 'load_spec', 'spec_from_config', 'select',
           'resolve_path', 'recipe_delta', 'build_run_config', 'config_fingerprint', 'plan_runs',
           'default_work_dir', 'check_selection']

_SPEC_KEYS = {'seeds', 'metrics', 'baseline', 'cfg_options', 'variants', 'higher_is_better',
              'test', 'test_checkpoint', 'prepare', 'description', 'alpha', 'resources'}
_RESOURCE_KEYS = {'gpu_hours_per_epoch', 'checkpoint_gb', 'source'}
_VARIANT_KEYS = {'config', 'recipe', 'cfg_options', 'description', 'baseline', 'question'}


@dataclass
class Variant:
    name: str
    config: Optional[str] = None  # None: the preset itself
    recipe: Optional[str] = None
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    description: str = ''
    baseline: Optional[str] = None  # compare with this variant instead of the preset's baseline
    questions: Dict[str, str] = field(default_factory=dict)  # reference variant -> question


@dataclass
class BenchmarkSpec:
    name: str
    path: str
    variants: List[Variant]
    seeds: List[int]
    metrics: List[str]
    baseline: Optional[str]
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    test: bool = True
    test_checkpoint: str = 'last'
    alpha: float = 0.05
    prepare: List[dict] = field(default_factory=list)
    description: str = ''
    resources: Dict[str, Any] = field(default_factory=dict)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def baselines(self) -> Dict[str, Optional[str]]:
        """The variant each variant is compared with (its own ``baseline`` or the preset's)."""
        return {v.name: v.baseline or self.baseline for v in self.variants}

    def questions(self) -> Dict[str, str]:
        """The question each variant's comparison with its baseline asks ('' where none)."""
        return {v: self.question(v, ref) if ref and ref != v else ''
                for v, ref in self.baselines().items()}

    def question(self, variant: str, reference: str) -> str:
        """The question ``variant`` vs ``reference`` answers ('' when the preset declares none)."""
        return self.variant(variant).questions.get(reference, '')

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        names = [v.name for v in self.variants]
        raise KeyError(f'unknown variant {name!r}; the preset has {names}')


@dataclass
class RunSpec:
    """One training (+ test) run: a variant with a seed, in its own work dir."""
    variant: str
    seed: int
    work_dir: str
    task: str = ''  # the suite task it belongs to ('' for a single preset)

    @property
    def key(self) -> str:
        return '/'.join(p for p in (self.task, self.variant, f'seed{self.seed}') if p)


def resolve_path(path: str, relative_to: Optional[str] = None) -> str:
    """A config path as mmengine resolves ``_base_``: ``'mmdet::detr/x.py'`` (a package's
    config), an absolute path, or a path relative to ``relative_to`` (the preset's folder) or to
    the current directory. Raises ``FileNotFoundError`` naming the path when none exists."""
    if '::' in path:
        try:
            found, _ = Config._get_cfg_path(path, osp.join(relative_to or '.', 'x.py'))
        except Exception:  # not installed / not shipped: the message below says which path
            found = None
        if found and osp.isfile(found):
            return found
        raise FileNotFoundError(f'config file not found: {path}')
    for cand in ([path] if osp.isabs(path) else
                 [osp.join(relative_to, path)] * bool(relative_to) + [path]):
        if osp.isfile(cand):
            return osp.abspath(cand)
    raise FileNotFoundError(f'config file not found: {path}' +
                            (f' (relative to {relative_to})' if relative_to else ''))


def _plain(value: Any) -> Any:
    """ConfigDict/list trees -> plain dict/list trees (so they can be merged and hashed)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _as_dict(value: Any, what: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'{what} must be a dict of config overrides, got {type(value).__name__}')
    return {str(k): _plain(v) for k, v in value.items()}


def _questions(value: Any, name: str, baseline: Optional[str], names: Sequence[str],
               path: str) -> Dict[str, str]:
    """A variant's ``question`` as ``{reference variant: question}`` (a string is the question
    of its comparison with ``baseline``)."""
    if value is None or value == '':
        return {}
    if isinstance(value, str):
        if not baseline or baseline == name:
            raise ValueError(f'variant {name!r} of {path} has a question but no baseline to '
                             "compare with; name the reference: question=dict(other='...')")
        value = {baseline: value}
    if not isinstance(value, dict):
        raise ValueError(f'variant {name!r}: question must be a string or a dict of reference '
                         f'variant -> question, got {type(value).__name__}')
    for ref, text in value.items():
        if ref not in names or ref == name:
            raise ValueError(f'variant {name!r}: question against {ref!r}, which is not another '
                             f'variant of {path} ({list(names)})')
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'variant {name!r}: the question against {ref!r} must be a '
                             f'non-empty string, got {text!r}')
    return {str(k): v.strip() for k, v in value.items()}


def load_spec(path: str) -> BenchmarkSpec:
    """Read a benchmark preset (an mmengine config with a ``benchmark`` dict)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'benchmark preset not found: {path}')
    cfg = Config.fromfile(path, import_custom_modules=False)
    return spec_from_config(cfg, path)


def spec_from_config(cfg: Config, path: str) -> BenchmarkSpec:
    """Validate the ``benchmark`` dict of an already loaded preset config."""
    raw = cfg.get('benchmark')
    if not isinstance(raw, dict):
        legacy = ' (the old schema with a top-level `base`: inherit it with `_base_` and move ' \
            'the other keys into `benchmark = dict(...)`)' if 'base' in cfg else ''
        raise KeyError(f'{path} is not a benchmark preset: it has no `benchmark = dict(...)` '
                       f'with variants, seeds and metrics{legacy}')
    raw = _plain(raw)
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise KeyError(f'unknown key(s) {unknown} in `benchmark` of {path}; allowed: '
                       f'{sorted(_SPEC_KEYS)}')
    variants_raw = raw.get('variants')
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ValueError(f'`benchmark.variants` of {path} must be a non-empty dict of '
                         'name -> dict(config=..., recipe=..., cfg_options=...)')
    variants, asked = [], {}
    for name, v in variants_raw.items():
        v = {} if v is None else v
        if not isinstance(v, dict):
            raise ValueError(f'variant {name!r} must be a dict with keys {sorted(_VARIANT_KEYS)}, '
                             f'got {type(v).__name__}')
        bad = sorted(set(v) - _VARIANT_KEYS)
        if bad:
            raise KeyError(f'variant {name!r} has unknown key(s) {bad}; allowed: '
                           f'{sorted(_VARIANT_KEYS)}')
        if not name.strip() or '/' in name or name.startswith('.'):
            raise ValueError(f'variant name {name!r} must be a non-empty name without "/"')
        variants.append(Variant(name=name, config=v.get('config'), recipe=v.get('recipe'),
                                cfg_options=_as_dict(v.get('cfg_options'),
                                                     f'variant {name!r} cfg_options'),
                                description=v.get('description', ''), baseline=v.get('baseline')))
        asked[name] = v.get('question')
    metrics = raw.get('metrics')
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise ValueError(f'`benchmark.metrics` of {path} must list metric names such as '
                         f"['accuracy/top1'], got {metrics!r}")
    seeds = raw.get('seeds', [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f'`benchmark.seeds` of {path} must be a non-empty list of ints, '
                         f'got {seeds!r}')
    names = [v.name for v in variants]
    baseline = raw.get('baseline', names[0])
    for who, ref in [('baseline', baseline)] + [(f'variant {v.name!r}: baseline', v.baseline)
                                                 for v in variants if v.baseline]:
        if ref is not None and ref not in names:
            raise ValueError(f'{who} {ref!r} is not one of the variants {names} ({path})')
    for v in variants:
        v.questions = _questions(asked[v.name], v.name, v.baseline or baseline, names, path)
    test_checkpoint = raw.get('test_checkpoint', 'last')
    if test_checkpoint not in ('last', 'best'):
        raise ValueError(f"test_checkpoint must be 'last' or 'best', got {test_checkpoint!r}")
    alpha = float(raw.get('alpha', 0.05))
    if not 0 < alpha < 1:
        raise ValueError(f'`benchmark.alpha` must be in (0, 1), got {alpha}')
    prepare = raw.get('prepare') or []
    prepare = [prepare] if isinstance(prepare, dict) else list(prepare)
    for step in prepare:
        if not isinstance(step, dict) or not isinstance(step.get('fn'), str):
            raise ValueError("each `prepare` step must be dict(fn='package.module.function', "
                             f'kwargs=dict(...)), got {step!r}')
    resources = _resources(raw.get('resources'), path)
    spec = BenchmarkSpec(
        name=osp.splitext(osp.basename(path))[0], path=osp.abspath(path), variants=variants,
        seeds=list(seeds), metrics=list(metrics), baseline=baseline,
        cfg_options=_as_dict(raw.get('cfg_options'), 'benchmark.cfg_options'),
        higher_is_better=bool(raw.get('higher_is_better', True)), test=bool(raw.get('test', True)),
        test_checkpoint=test_checkpoint, alpha=alpha, prepare=prepare,
        description=raw.get('description', ''), resources=resources)
    try:
        preset = Config(copy.deepcopy(cfg.to_dict()))
        preset.merge_from_dict(copy.deepcopy(spec.cfg_options))
    except Exception:  # a bad override: every run records it as failed (build_run_config)
        return spec
    check_selection(preset, spec)
    return spec


def _resources(raw: Any, path: str) -> Dict[str, Any]:
    """Validate ``benchmark.resources`` (positive numbers and a ``source`` text)."""
    raw = raw or {}
    bad = sorted(set(raw) - _RESOURCE_KEYS) if isinstance(raw, dict) else ['(not a dict)']
    if bad:
        raise KeyError(f'`benchmark.resources` of {path} may have {sorted(_RESOURCE_KEYS)}, '
                       f'got {bad}')
    for key in _RESOURCE_KEYS - {'source'}:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise ValueError(f'`benchmark.resources.{key}` of {path} must be a number > 0, '
                             f'got {value!r}')
    return dict(raw)


# dataset keys that say how samples are loaded or how many of them, not which data they come from
_HOW_KEYS = {'pipeline', 'test_mode', 'indices', 'num_samples', 'lazy_init', 'serialize_data',
             'max_refetch', 'backend_args'}


def _data_source(dataloader: Any) -> Any:
    """The data a dataloader config reads: its dataset config without :data:`_HOW_KEYS` (a
    subset of a split still overlaps the split)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _HOW_KEYS}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        return value
    return strip(_plain(dataloader.get('dataset'))) if isinstance(dataloader, dict) else None


def _selection(cfg: Config, spec: BenchmarkSpec) -> Optional[str]:
    """What of a run picks weights or a stopping point by the validation score, if anything."""
    if spec.test and spec.test_checkpoint == 'best':
        return "test_checkpoint='best' picks the checkpoint"
    for hook in cfg.get('custom_hooks') or []:
        kind = hook.get('type') if isinstance(hook, dict) else None
        name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if name.endswith('EarlyStoppingHook'):
            return 'EarlyStoppingHook picks the stopping epoch'
    return None


def check_selection(cfg: Config, spec: BenchmarkSpec) -> None:
    """Refuse a run config that selects on its validation score when that score is the
    result: the validation data is the test data, or the result is the last validation."""
    what = _selection(cfg, spec)
    if what is None:
        return
    val = _data_source(cfg.get('val_dataloader'))
    if not spec.test:
        why = 'the reported result is that validation (test=False)'
    elif val is not None and val == _data_source(cfg.get('test_dataloader')):
        why = 'val_dataloader and test_dataloader read the same data'
    else:
        return
    raise ValueError(f'preset {spec.name}: {what} by the validation score, but {why}, so the '
                     'result would be chosen on the data it is reported on; hold out a '
                     "validation split (val_dataloader.dataset) or use test_checkpoint='last' "
                     'without early stopping')


def select(spec: BenchmarkSpec, variants: Optional[Sequence[str]] = None,
           seeds: Optional[Sequence[int]] = None) -> BenchmarkSpec:
    """A copy of ``spec`` restricted to the named variants (in the given order) and seeds."""
    spec = copy.deepcopy(spec)
    if variants:
        spec.variants = [spec.variant(name) for name in variants]
    if seeds is not None and len(seeds):
        spec.seeds = [int(s) for s in seeds]
    return spec


def _diff(new: Any, old: Any) -> Any:
    """The overrides that turn ``old`` into ``new`` (nested dicts; ``_delete_`` where keys go)."""
    if not (isinstance(new, dict) and isinstance(old, dict)):
        return new
    if set(old) - set(new):  # keys removed: replace the whole dict
        return dict(new, _delete_=True)
    out = {}
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif value != old[key]:
            out[key] = _diff(value, old[key])
    return out


def recipe_delta(path: str) -> Dict[str, Any]:
    """What the config at ``path`` changes relative to its own ``_base_`` configs, as nested
    overrides (e.g. ``configs/dropkey/detr_r50_dropkey_8xb2-150e_coco.py`` -> the ``Regularized``
    model keys), so a preset can apply a regularizer config's recipe to another model or data
    set."""
    cfg = Config.fromfile(path, import_custom_modules=False).to_dict()
    bases = Config._get_base_files(path)
    if not bases:
        raise ValueError(f'recipe {path} has no `_base_`: there is nothing to take the '
                         'difference against; use config= for a whole config')
    absolute = [b if '::' in b else osp.abspath(osp.join(osp.dirname(path), b)) for b in bases]
    with tempfile.TemporaryDirectory() as tmp:
        stub = osp.join(tmp, 'recipe_base.py')
        with open(stub, 'w') as f:
            f.write(f'_base_ = {absolute!r}\n')
        base = Config.fromfile(stub, import_custom_modules=False).to_dict()
    delta = _diff(_plain(cfg), _plain(base))
    return delta if isinstance(delta, dict) else {}


def build_run_config(spec: BenchmarkSpec, variant: Variant, seed: int,
                     extra_options: Optional[Dict[str, Any]] = None,
                     add_memory_hook: bool = True) -> Config:
    """The complete config of one run (see the module docstring for the merge order).

    Raises ``FileNotFoundError`` for a missing config and whatever mmengine raises for an
    override that cannot be merged; the caller records those as a failed run.
    """
    rel = osp.dirname(spec.path)
    if variant.config:
        cfg = Config.fromfile(resolve_path(variant.config, rel), import_custom_modules=False)
    else:
        cfg = Config.fromfile(spec.path, import_custom_modules=False)
    cfg.pop('benchmark', None)
    steps = [recipe_delta(resolve_path(variant.recipe, rel))] if variant.recipe else []
    for options in steps + [spec.cfg_options, variant.cfg_options, extra_options or {}]:
        if options:
            cfg.merge_from_dict(copy.deepcopy(options))
    cfg.pop('benchmark', None)
    cfg.randomness = dict(cfg.get('randomness') or {}, seed=int(seed))
    if add_memory_hook:
        hooks = list(cfg.get('custom_hooks') or [])
        if not any(isinstance(h, dict) and h.get('type') == 'PeakMemoryHook' for h in hooks):
            hooks.append(dict(type='PeakMemoryHook'))
        cfg.custom_hooks = hooks
    imports = dict(cfg.get('custom_imports') or {})
    if 'mmvitreg' not in list(imports.get('imports') or []):
        imports['imports'] = list(imports.get('imports') or []) + ['mmvitreg']
        imports.setdefault('allow_failed_imports', False)
        cfg.custom_imports = imports
    cfg.work_dir = None  # the runner passes --work-dir
    check_selection(cfg, spec)
    return cfg


def config_fingerprint(cfg: Config, runtime: Optional[Dict[str, Any]] = None) -> str:
    """A short hash of a run's final config (the runner passes it with its batch fitted to
    ``--gpus-per-run``, :func:`~mmvitreg.benchmark.runner.run_config`; it holds the determinism
    switches, ``randomness.deterministic`` and ``env_cfg.cudnn_benchmark``) and of ``runtime``,
    what else changes its numbers (:attr:`~mmvitreg.benchmark.launch.Slot.runtime`: device,
    thread count or GPU models, torch version); a changed variant, batch or runtime makes its
    finished runs stale."""
    data = cfg.to_dict()
    data.pop('work_dir', None)
    if runtime is not None:
        data = dict(config=data, runtime=runtime)
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def plan_runs(spec: BenchmarkSpec, work_dir: str, task: str = '') -> List[RunSpec]:
    """All (variant, seed) runs, seed-major: every variant's first seed comes before any second
    seed, so a partial sweep already pairs every variant with the baseline."""
    return [RunSpec(v.name, s, osp.join(work_dir, v.name, f'seed{s}'), task)
            for s in spec.seeds for v in spec.variants]


def default_work_dir(name: str) -> str:
    return osp.join('work_dirs', 'benchmark', name)
