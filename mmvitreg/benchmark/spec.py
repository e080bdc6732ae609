"""Benchmark presets: which model, which variants, which seeds, which metrics.

A preset is an mmengine config file (``configs/benchmark/*.py``) with these keys::

    base = 'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py'   # config every variant starts from
    seeds = [0, 1]                                          # one run per (variant, seed)
    metrics = ['accuracy/top1']        # keys of the test results; the first one is the primary
    baseline = 'baseline'              # variant the gains are computed against (default: first)
    cfg_options = {...}                # overrides applied to every variant (e.g. the schedule)
    variants = dict(
        baseline=dict(),
        dropkey=dict(cfg_options={'model.backbone.type': 'Regularized',
                                  'model.backbone.host': 'VisionTransformer',
                                  'model.backbone.dropkey': dict(ratio=0.1)}),
        dhvt=dict(config='configs/dhvt/....py', description='DHVT backbone'),
    )

Optional keys: ``higher_is_better`` (default True), ``test`` (run ``tools/test.py`` after
training, default True; otherwise the last validation result is used), ``test_checkpoint``
(``'last'`` or ``'best'``), a variant's own ``baseline`` (e.g. DRLoc-Swin vs Swin and DRLoc-ViT
vs ViT in one preset), ``prepare`` (a list of ``dict(fn='module.function', kwargs=...)``
called once before the runs, e.g. to write a generated dataset), ``description``. Names starting
with ``_`` are the preset's own helper variables and are ignored.

A variant is a whole config (``config``), ``--cfg-options``-style overrides (``cfg_options``), or
both; the tool knows no regularizer by name, so a new one is a new entry. The final config of a run
is: variant config (or ``base``) <- preset ``cfg_options`` <- variant ``cfg_options`` <- command-line
overrides <- ``randomness.seed``; the :class:`~mmvitreg.engine.hooks.PeakMemoryHook` is appended.
"""
import copy
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from mmengine.config import Config

__all__ = ['Variant', 'BenchmarkSpec', 'RunSpec', 'load_spec', 'resolve_path', 'build_run_config',
           'config_fingerprint', 'plan_runs']

_SPEC_KEYS = {'base', 'seeds', 'metrics', 'metric', 'baseline', 'cfg_options', 'variants',
              'higher_is_better', 'test', 'test_checkpoint', 'prepare', 'description'}
_VARIANT_KEYS = {'config', 'cfg_options', 'description', 'baseline'}
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclass
class Variant:
    name: str
    config: Optional[str] = None  # None: the preset's base config
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    description: str = ''
    baseline: Optional[str] = None  # compare with this variant instead of the preset's baseline


@dataclass
class BenchmarkSpec:
    name: str
    base: Optional[str]
    variants: List[Variant]
    seeds: List[int]
    metrics: List[str]
    baseline: Optional[str]
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    test: bool = True
    test_checkpoint: str = 'last'
    prepare: List[dict] = field(default_factory=list)
    description: str = ''
    path: Optional[str] = None

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def baselines(self) -> Dict[str, Optional[str]]:
        """The variant each variant is compared with (its own ``baseline`` or the preset's)."""
        return {v.name: v.baseline or self.baseline for v in self.variants}

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f'unknown variant {name!r}; the preset has {[v.name for v in self.variants]}')


@dataclass
class RunSpec:
    """One training + test run: a variant with a seed, in its own work dir."""
    variant: str
    seed: int
    work_dir: str

    @property
    def key(self) -> str:
        return f'{self.variant}/seed{self.seed}'


def resolve_path(path: str, relative_to: Optional[str] = None) -> str:
    """Find a config: ``'mmpretrain::deit/x.py'`` / ``'mmdet::detr/y.py'`` (a config shipped with
    that package), a path as given, relative to the preset's folder or to the repo root.

    Raises ``FileNotFoundError`` naming the path when none of them exists.
    """
    if '::' in path:
        package, _, rel = path.partition('::')
        import importlib.util
        found = importlib.util.find_spec(package) if package.isidentifier() else None
        if found is not None and found.origin:
            cand = osp.join(osp.dirname(found.origin), '.mim', 'configs', rel)
            if osp.isfile(cand):
                return cand
        raise FileNotFoundError(f'config file not found: {path}')
    candidates = [path]
    if not osp.isabs(path):
        if relative_to:
            candidates.append(osp.join(relative_to, path))
        candidates.append(osp.join(REPO_ROOT, path))
    for cand in candidates:
        if osp.isfile(cand):
            return osp.abspath(cand)
    raise FileNotFoundError(f'config file not found: {path}')


def _as_dict(value: Any, what: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'{what} must be a dict of config overrides, got {type(value).__name__}')
    return {str(k): _plain(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    """ConfigDict/list trees -> plain dict/list trees (so they can be merged and hashed)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if isinstance(value, tuple) else [
            _plain(v) for v in value]
    return value


def load_spec(path: str) -> BenchmarkSpec:
    """Read a benchmark preset file into a :class:`BenchmarkSpec` (validating every key)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'benchmark preset not found: {path}')
    raw = Config.fromfile(path, import_custom_modules=False).to_dict()
    raw.pop('custom_imports', None)
    raw = {k: v for k, v in raw.items() if not k.startswith('_')}  # the preset's own helpers
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise KeyError(f'unknown key(s) {unknown} in benchmark preset {path}; allowed: '
                       f'{sorted(_SPEC_KEYS)}')
    variants_raw = raw.get('variants')
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ValueError(f'benchmark preset {path} needs `variants`, a non-empty dict of '
                         'name -> dict(config=..., cfg_options=...)')
    variants = []
    for name, v in variants_raw.items():
        v = {} if v is None else v
        if not isinstance(v, dict):
            raise ValueError(f'variant {name!r} must be a dict with keys {sorted(_VARIANT_KEYS)}, '
                             f'got {type(v).__name__}')
        bad = sorted(set(v) - _VARIANT_KEYS)
        if bad:
            raise KeyError(f'variant {name!r} has unknown key(s) {bad}; allowed: '
                           f'{sorted(_VARIANT_KEYS)}')
        if '/' in name or name.startswith('.') or not name.strip():
            raise ValueError(f'variant name {name!r} must be a non-empty name without "/"')
        variants.append(Variant(name=name, config=v.get('config'),
                                cfg_options=_as_dict(v.get('cfg_options'), f'variant {name!r} cfg_options'),
                                description=v.get('description', ''),
                                baseline=v.get('baseline')))
    base = raw.get('base')
    if base is None and any(v.config is None for v in variants):
        missing = [v.name for v in variants if v.config is None]
        raise ValueError(f'benchmark preset {path} has no `base` config, but variants {missing} '
                         'give no `config`')
    metrics = raw.get('metrics', raw.get('metric'))
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise ValueError(f'benchmark preset {path} needs `metrics`, a list of metric names such as '
                         "['accuracy/top1'], got {metrics!r}")
    seeds = raw.get('seeds', [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f'benchmark preset {path}: `seeds` must be a non-empty list of ints, '
                         f'got {seeds!r}')
    names = [v.name for v in variants]
    baseline = raw.get('baseline', names[0])
    if baseline is not None and baseline not in names:
        raise ValueError(f'benchmark preset {path}: baseline {baseline!r} is not one of the '
                         f'variants {names}')
    for v in variants:
        if v.baseline is not None and v.baseline not in names:
            raise ValueError(f'variant {v.name!r}: baseline {v.baseline!r} is not one of the '
                             f'variants {names}')
    test_checkpoint = raw.get('test_checkpoint', 'last')
    if test_checkpoint not in ('last', 'best'):
        raise ValueError(f"test_checkpoint must be 'last' or 'best', got {test_checkpoint!r}")
    prepare = raw.get('prepare') or []
    if isinstance(prepare, dict):
        prepare = [prepare]
    for step in prepare:
        if not isinstance(step, dict) or not isinstance(step.get('fn'), str):
            raise ValueError(f"each `prepare` step must be dict(fn='package.module.function', "
                             f'kwargs=dict(...)), got {step!r}')
    return BenchmarkSpec(
        name=osp.splitext(osp.basename(path))[0], base=base, variants=variants,
        seeds=list(seeds), metrics=list(metrics), baseline=baseline,
        cfg_options=_as_dict(raw.get('cfg_options'), 'preset cfg_options'),
        higher_is_better=bool(raw.get('higher_is_better', True)),
        test=bool(raw.get('test', True)), test_checkpoint=test_checkpoint,
        prepare=[_plain(s) for s in prepare], description=raw.get('description', ''),
        path=osp.abspath(path))


def select(spec: BenchmarkSpec, variants: Optional[Sequence[str]] = None,
           seeds: Optional[Sequence[int]] = None) -> BenchmarkSpec:
    """A copy of ``spec`` restricted to the named variants (in the given order) and seeds."""
    spec = copy.deepcopy(spec)
    if variants:
        spec.variants = [spec.variant(name) for name in variants]
    if seeds is not None and len(seeds):
        spec.seeds = [int(s) for s in seeds]
    return spec


def build_run_config(spec: BenchmarkSpec, variant: Variant, seed: int,
                     extra_options: Optional[Dict[str, Any]] = None,
                     add_memory_hook: bool = True) -> Config:
    """The complete config of one run (see the module docstring for the merge order).

    Raises ``FileNotFoundError`` for a missing config and whatever mmengine raises for an
    override that cannot be merged; the caller records those as a failed run.
    """
    rel = osp.dirname(spec.path) if spec.path else None
    cfg_path = resolve_path(variant.config or spec.base, rel)
    cfg = Config.fromfile(cfg_path, import_custom_modules=False)
    for options in (spec.cfg_options, variant.cfg_options, extra_options or {}):
        if options:
            cfg.merge_from_dict(copy.deepcopy(options))
    randomness = dict(cfg.get('randomness') or {})
    randomness['seed'] = int(seed)
    cfg.randomness = randomness
    if add_memory_hook:
        hooks = list(cfg.get('custom_hooks') or [])
        if not any(isinstance(h, dict) and h.get('type') == 'PeakMemoryHook' for h in hooks):
            hooks.append(dict(type='PeakMemoryHook'))
        cfg.custom_hooks = hooks
        imports = dict(cfg.get('custom_imports') or {})
        modules = list(imports.get('imports') or [])
        if 'mmvitreg' not in modules:
            imports['imports'] = modules + ['mmvitreg']
            imports.setdefault('allow_failed_imports', False)
            cfg.custom_imports = imports
    cfg.work_dir = None  # the tool passes --work-dir
    return cfg


def config_fingerprint(cfg: Config) -> str:
    """A short hash of a run's final config; a changed variant makes its finished runs stale."""
    data = cfg.to_dict()
    data.pop('work_dir', None)
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def plan_runs(spec: BenchmarkSpec, work_dir: str) -> List[RunSpec]:
    """All (variant, seed) runs in execution order: seed-major, so early results cover every
    variant (the first seed of each variant finishes before any second seed starts)."""
    return [RunSpec(v.name, s, osp.join(work_dir, v.name, f'seed{s}'))
            for s in spec.seeds for v in spec.variants]


def default_work_dir(spec: BenchmarkSpec) -> str:
    return osp.join('work_dirs', 'benchmark', spec.name)


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
