"""Learning-rate schedules that mmengine's built-in schedulers cannot express exactly.

:class:`OffsetCosineAnnealingLR` is timm's ``CosineLRScheduler`` with warm-up as the Swin / DRLoc
official code uses it (``warmup_prefix=False``): the warm-up only *overrides* the first epochs of
one cosine whose clock starts at step 0, so at the end of a 20-epoch warm-up of a 300-epoch
cosine the rate is ``eta_min + (base - eta_min) * (1 + cos(pi * 20 / 300)) / 2``, not ``base``.
mmengine's ``CosineAnnealingLR`` starts its cosine at ``begin``; this one starts it ``offset``
before ``begin``. Combined with ``LinearLR`` for the warm-up::

    param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
             convert_to_iter_based=True),
        dict(type='OffsetCosineAnnealingLR', T_max=300, offset=20, eta_min=1e-5, by_epoch=True,
             begin=20, end=101, convert_to_iter_based=True),
    ]

gives ``lr(t) = eta_min + (base - eta_min) * (1 + cos(pi * t / 300)) / 2`` from epoch 20 on,
stopped at epoch 101, as the official DRLoc loop runs it.
"""
import math

from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.optim.scheduler.param_scheduler import INF
from mmengine.registry import PARAM_SCHEDULERS

__all__ = ['OffsetCosineAnnealingLR']


@PARAM_SCHEDULERS.register_module()
class OffsetCosineAnnealingLR(CosineAnnealingLR):
    """``CosineAnnealingLR`` whose cosine clock started ``offset`` steps before ``begin``.

    At step ``begin + k`` the value is
    ``eta_min + (base - eta_min) * (1 + cos(pi * (k + offset) / T_max)) / 2`` in closed form from
    the optimizer's initial value ``base`` (so a warm-up scheduler before ``begin`` does not
    change it). ``offset=0`` equals ``CosineAnnealingLR`` when the value at ``begin`` is ``base``.
    From ``T_max`` on the value stays at ``eta_min`` (timm's ``cycle_limit=1`` and cool-down
    epochs). ``T_max`` is required; ``offset`` is in the same unit as ``begin`` (epochs are
    converted with ``convert_to_iter_based=True``).
    """

    def __init__(self, optimizer, T_max: int, offset: float = 0, eta_min: float = 0.,
                 begin: int = 0, end: int = INF, last_step: int = -1, by_epoch: bool = True,
                 verbose: bool = False, eta_min_ratio=None):
        if T_max is None or T_max <= 0:
            raise ValueError(f'OffsetCosineAnnealingLR T_max must be > 0, got {T_max!r}')
        if offset < 0:
            raise ValueError(f'OffsetCosineAnnealingLR offset must be >= 0, got {offset!r}')
        self.offset = offset
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min, begin=begin, end=end,
                         last_step=last_step, by_epoch=by_epoch, verbose=verbose,
                         eta_min_ratio=eta_min_ratio)

    @classmethod
    def build_iter_from_epoch(cls, *args, T_max=None, offset=0, begin=0, end=INF,
                              by_epoch=True, epoch_length=None, **kwargs):
        """Iteration-based instance from epoch-based ``T_max``/``offset``/``begin``/``end``."""
        if not by_epoch or not epoch_length or epoch_length <= 0:
            raise ValueError('OffsetCosineAnnealingLR converts epochs to iterations only with '
                             f'by_epoch=True and a positive epoch_length, got {epoch_length!r}')
        return cls(*args, T_max=T_max * epoch_length if T_max is not None else None,
                   offset=offset * epoch_length, begin=int(begin * epoch_length),
                   end=end if end == INF else int(end * epoch_length), by_epoch=False,
                   **kwargs)

    def _get_value(self) -> list:
        step = self.last_step + self.offset
        values = []
        for base in self.base_values:
            eta_min = self.eta_min if self.eta_min_ratio is None else base * self.eta_min_ratio
            if step >= self.T_max:  # one cycle only (timm cycle_limit=1): cool-down at eta_min
                values.append(eta_min)
                continue
            values.append(eta_min + (base - eta_min) * (1 + math.cos(math.pi * step / self.T_max))
                          / 2)
        return values
