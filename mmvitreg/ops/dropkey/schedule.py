"""DropKey options: validation, per-layer ratio schedules and Block/Cross seed calibration.

Paper (Li et al., "DropKey for Vision Transformer", CVPR 2023): the drop ratio decreases
linearly with depth (first layer ``p``, last layer 0); constant and increasing schedules are its
ablations. DropKey-Block / DropKey-Cross drop square windows / plus-shaped stripes of keys around
seed points of the 2-D key grid.
"""
import numbers
from typing import List

__all__ = [
    'DROPKEY_SCHEDULES', 'DROPKEY_VARIANTS', 'DROPKEY_BACKENDS', 'check_ratio', 'check_variant',
    'check_block_size', 'check_backend', 'dropkey_ratios', 'block_footprint', 'seed_probability',
    'ratio_threshold'
]

DROPKEY_SCHEDULES = ('decrease', 'constant', 'increase')
DROPKEY_VARIANTS = ('random', 'block', 'cross')
DROPKEY_BACKENDS = ('auto', 'flex', 'triton', 'sdpa')
#: masks compare 16-bit random lanes against ``round(p * 2**16)``
THRESHOLD_BITS = 16


def check_ratio(ratio: float, name: str = 'ratio') -> float:
    """Return ``ratio`` as float if it is a real number in ``[0, 1)``; one clear error otherwise
    (``TypeError`` for booleans and non-numbers: ``ratio=False`` is not a ratio of 0)."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise TypeError(f'DropKey {name} must be a number in [0, 1), got {ratio!r}')
    value = float(ratio)
    if not 0.0 <= value < 1.0:
        raise ValueError(f'DropKey {name} must be in [0, 1), got {ratio!r}')
    return value


def check_variant(variant: str) -> str:
    if variant not in DROPKEY_VARIANTS:
        raise ValueError(
            f'DropKey variant must be one of {list(DROPKEY_VARIANTS)}, got {variant!r}')
    return variant


def check_positive_int(value: int, name: str) -> int:
    """``value`` if it is an integer >= 1 (not a bool); one clear ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'DropKey {name} must be an integer >= 1, got {value!r}')
    return value


def check_block_size(block_size: int) -> int:
    return check_positive_int(block_size, 'block_size')


def check_backend(backend: str) -> str:
    if backend not in DROPKEY_BACKENDS:
        raise ValueError(
            f'DropKey backend must be one of {list(DROPKEY_BACKENDS)}, got {backend!r}')
    return backend


def dropkey_ratios(num_layers: int,
                   ratio: float,
                   schedule: str = 'decrease',
                   min_ratio: float = 0.0) -> List[float]:
    """Per-layer drop ratios of a stack of ``num_layers`` attention layers (first = shallowest).

    ``'decrease'`` (paper default): linear from ``ratio`` (first layer) to ``min_ratio`` (last
    layer); ``'constant'``: ``ratio`` everywhere; ``'increase'``: linear from ``min_ratio`` to
    ``ratio``. A single layer gets ``ratio``. ``min_ratio > ratio`` is refused for the
    linear schedules (it would silently reverse their direction).
    """
    ratio = check_ratio(ratio)
    min_ratio = check_ratio(min_ratio, 'min_ratio')
    if schedule in ('decrease', 'increase') and min_ratio > ratio:
        raise ValueError(f'DropKey min_ratio={min_ratio!r} must be <= ratio={ratio!r} for '
                         f'schedule={schedule!r}')
    if schedule not in DROPKEY_SCHEDULES:
        raise ValueError(
            f'DropKey schedule must be one of {list(DROPKEY_SCHEDULES)}, got {schedule!r}')
    check_positive_int(num_layers, 'num_layers')
    if schedule == 'constant' or num_layers == 1:
        return [ratio] * num_layers
    start, end = (ratio, min_ratio) if schedule == 'decrease' else (min_ratio, ratio)
    # convex combination: exact end points (start + i * step can undershoot 0 by 1e-17)
    ts = [i / (num_layers - 1) for i in range(num_layers)]
    return [start * (1.0 - t) + end * t for t in ts]


def block_footprint(variant: str, block_size: int) -> int:
    """Number of keys one seed drops (and of seed positions covering one key): 1, b*b or 2b-1."""
    check_variant(variant)
    check_block_size(block_size)
    if variant == 'random':
        return 1
    return block_size * block_size if variant == 'block' else 2 * block_size - 1


def seed_probability(ratio: float, footprint: int) -> float:
    """Seed probability ``gamma = 1 - (1 - p) ** (1 / F)``.

    With every key covered by exactly ``F`` independent seed positions, a key survives with
    probability ``(1 - gamma) ** F = 1 - p``: the expected dropped fraction equals ``ratio``.
    (DropBlock's ``p / b**2`` approximation under-drops for large ``p``.)
    """
    ratio = check_ratio(ratio)
    return 1.0 - (1.0 - ratio)**(1.0 / footprint)


def ratio_threshold(prob: float) -> int:
    """Integer threshold ``t`` with ``P(lane < t) = t / 2**16`` closest to ``prob`` (error < 8e-6).

    Masks draw one 16-bit lane per logit, so ``p`` is quantised to ``round(p * 65536) / 65536``.
    """
    return int(round(float(prob) * (1 << THRESHOLD_BITS)))
