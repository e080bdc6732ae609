"""The parameter-free ``DropKey`` attention core and the model-level switches.

Flags (what the hooks and the model-level Monte-Carlo averaging rely on):

* ``training``: DropKey samples masks in training mode.
* ``sampling``: forces sampling outside training (Monte-Carlo test-time averaging: set by
  :func:`set_dropkey_sampling` around the stochastic passes of ``predict``).
* ``enabled``: the master switch. ``False`` means plain attention everywhere (train *and* MC).
  ``DropKeyScheduleHook`` clears it only for the training iterations of its final phase and sets
  it again for validation and testing, so in-process validation after the phase uses the same
  (MC) estimator as ``tools/test.py`` on the saved checkpoint.
* ``active = (training or sampling) and enabled and ratio > 0``; callers use plain attention
  when it is False (eval output is then bit-identical to the host's).

Masks are a pure function of ``(run seed, iteration, layer_id, rank, call counter)`` and the
element position (:mod:`.random`); the call counter restarts at every ``set_step`` (the hook
calls it before each training iteration), so a resumed run draws exactly the masks of the
uninterrupted one.

Whole-model ``torch.compile``: the sampling call (key from the counter, mask, kernel) is excluded
from tracing (:mod:`.tracing`); it runs eagerly between the compiled graphs, so the masks are
those of the eager model for the same seed, step and call counter.
"""
import logging
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import dropkey_attention
from .masks import check_grid, keep_mask_rows, repair_all_dropped, repaired_row_share
from .random import call_key, get_generation, get_step
from .replay import KeyReplay, in_backward, rng_fingerprint
from .schedule import (check_backend, check_block_size, check_positive_int, check_ratio,
                       check_variant)
from .tracing import not_traced

#: a layer whose expected share of repaired (all-dropped) rows exceeds this gets a warning
REPAIRED_ROWS_WARNING = 0.01

__all__ = ['DropKey', 'dropkey_modules', 'set_dropkey_enabled', 'set_dropkey_sampling',
           'assign_layer_ids', 'next_layer_id']


class DropKey(nn.Module):
    """Parameter-free DropKey attention core: ``forward(q, k, v, ...)`` -> attention output.

    Args:
        ratio: drop probability of this layer, in ``[0, 1)``.
        variant: ``'random'`` (the paper's) | ``'block'`` | ``'cross'``.
        block_size: block side / cross length of the structured variants.
        chunk_size: queries per chunk (None: from ``memory_budget``).
        backend: ``'auto'`` (on CUDA the Triton kernel with attention dropout or a trainable
            bias, FlexAttention where it applies, else SDPA) | ``'triton'`` | ``'flex'`` |
            ``'sdpa'``.
        layer_id: this layer's number in the model; part of the mask key, so it must be unique
            among the DropKey modules of a model (see :func:`assign_layer_ids`).
        memory_budget: bytes one chunk's mask may use (None: 1/2048 of the device's memory).
        name: shown in errors (e.g. the host attention module's path).
    """

    def __init__(self,
                 ratio: float = 0.1,
                 variant: str = 'random',
                 block_size: int = 3,
                 chunk_size: Optional[int] = None,
                 backend: str = 'auto',
                 layer_id: int = 0,
                 memory_budget: Optional[int] = None,
                 name: str = '') -> None:
        super().__init__()
        self.ratio = check_ratio(ratio)
        self.variant = check_variant(variant)
        self.block_size = check_block_size(block_size)
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size,
                                                                             'chunk_size')
        self.backend = check_backend(backend)
        if isinstance(layer_id, bool) or not isinstance(layer_id, int):
            raise ValueError(f'DropKey layer_id must be an integer, got {layer_id!r}')
        self.layer_id = layer_id
        self.memory_budget = memory_budget
        self.name = name
        self.enabled = True
        self.sampling = False
        self._generation: Optional[int] = None
        self._calls = 0
        self._replay = KeyReplay()
        self._checked_keys: Optional[int] = None

    @property
    def active(self) -> bool:
        return (self.training or self.sampling) and self.enabled and self.ratio > 0

    def next_key(self, device: Optional[torch.device] = None) -> int:
        """The key of the next call (the counter restarts at every ``set_step``). A call inside
        backward, i.e. activation checkpointing recomputing the forward, gets the key its
        forward call had (:mod:`.replay`); ``device``: where the call's tensors are."""
        generation = get_generation()
        if generation != self._generation:
            self._generation, self._calls = generation, 0
            self._replay.clear()
        fingerprint = rng_fingerprint(torch.device('cpu') if device is None else device)
        if in_backward():
            key = self._replay.recall(fingerprint)
            if key is not None:
                return key
            if not self._replay.warned:
                self._replay.warned = True
                logging.getLogger(__name__).warning(
                    f'DropKey {self.name or f"layer {self.layer_id}"}: a call inside backward '
                    'matches no forward call (activation checkpointing with '
                    'preserve_rng_state=False?); it draws a new mask, so its gradients are not '
                    "those of the forward's mask")
        call = self._calls
        self._calls += 1
        key = call_key(self.layer_id, call, step=get_step())
        self._replay.record(fingerprint, key)
        return key

    def check_repaired_rows(self, num_keys: int, grid_hw=None, num_extra_tokens: int = 0
                            ) -> float:
        """Expected share of this layer's rows with every key dropped (repaired to plain
        attention, :mod:`.masks`) on ``num_keys`` keys; logs a warning once per key count when
        it exceeds :data:`REPAIRED_ROWS_WARNING` (DropKey then drops far fewer than ``ratio``)."""
        self._checked_keys = num_keys
        share = repaired_row_share(self.ratio, num_keys, self.variant, grid_hw, num_extra_tokens,
                                   self.block_size)
        if share > REPAIRED_ROWS_WARNING:
            logging.getLogger(__name__).warning(
                f'DropKey {self.name or f"layer {self.layer_id}"}: ratio {self.ratio:.4g} on '
                f'{num_keys} keys drops every key of {share:.1%} of the query rows (expected); '
                f'those rows keep plain attention, so far fewer than {self.ratio:.4g} of the '
                f'logits are dropped: use a lower ratio or more keys')
        return share

    def _grid(self, num_keys: int, grid):
        """The call's key grid ``(hw, extra tokens)``, checked; the repaired-rows warning is
        checked once per key count."""
        hw, extra = None, 0
        if self.variant != 'random':
            hw = None if grid is None else (int(grid.hw[0]), int(grid.hw[1]))
            extra = 0 if grid is None else int(grid.num_extra_tokens)
            check_grid(self.variant, num_keys, hw, extra, self.name or f'layer {self.layer_id}')
        if self._checked_keys != num_keys:
            self.check_repaired_rows(num_keys, hw, extra)
        return hw, extra

    def forward(self,
                q: torch.Tensor,
                k: torch.Tensor,
                v: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None,
                dropout_p: float = 0.0,
                scale: Optional[float] = None,
                grid=None,
                key: Optional[int] = None) -> torch.Tensor:
        """``softmax(mask(q k^T * scale)) v`` with DropKey (plain SDPA while not active).

        ``attn_mask`` in SDPA convention; ``grid`` a ``TokenGrid`` (keys = extra tokens then the
        row-major grid) or None (keys not on an image grid: block/cross raise); ``key`` an
        explicit call key (None = the next one of this module).
        """
        if not self.active:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  dropout_p=dropout_p, scale=scale)
        return self._sample(q, k, v, attn_mask, dropout_p, scale, grid, key)

    @not_traced
    def _sample(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attn_mask: Optional[torch.Tensor], dropout_p: float, scale: Optional[float],
                grid, key: Optional[int]) -> torch.Tensor:
        """The active :meth:`forward`: the call's key, mask and kernel (never traced)."""
        hw, extra = self._grid(k.shape[-2], grid)
        return dropkey_attention(q, k, v, self.ratio, self.variant, attn_mask=attn_mask,
                                 dropout_p=dropout_p, scale=scale, grid_hw=hw,
                                 num_extra_tokens=extra, block_size=self.block_size,
                                 key=self.next_key(q.device) if key is None else key,
                                 chunk_size=self.chunk_size, memory_budget=self.memory_budget,
                                 backend=self.backend)

    @not_traced
    def keep_mask(self,
                  q: torch.Tensor,
                  k: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None,
                  grid=None,
                  key: Optional[int] = None) -> torch.Tensor:
        """Bool keep mask ``(B, heads, Nq, Nk)`` of a call: the mask :meth:`forward` uses for the
        same key (host mask applied, all-dropped rows repaired). For explicit compositions
        (e.g. Re-attention: ``logits.masked_fill(~keep, -inf)`` before the softmax)."""
        hw, extra = self._grid(k.shape[-2], grid)
        key = self.next_key(q.device) if key is None else key
        shape = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])) + (q.shape[-2],
                                                                             k.shape[-2])
        keep = keep_mask_rows(key, shape, 0, shape[-2], self.ratio, self.variant, hw, extra,
                              self.block_size, q.device)
        allowed = None
        if attn_mask is not None:
            allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float('-inf')
        return repair_all_dropped(keep, allowed)

    def extra_repr(self) -> str:
        s = f'ratio={self.ratio:.4g}, variant={self.variant}, layer_id={self.layer_id}'
        if self.variant != 'random':
            s += f', block_size={self.block_size}'
        if self.backend != 'auto':
            s += f', backend={self.backend}'
        if not self.enabled:
            s += ', enabled=False'
        return s


def dropkey_modules(model: nn.Module) -> List[DropKey]:
    """All :class:`DropKey` modules of ``model`` (unwraps DDP-style ``.module`` wrappers)."""
    if not isinstance(model, DropKey):
        model = getattr(model, 'module', model)
    return [m for m in model.modules() if isinstance(m, DropKey)]


def set_dropkey_enabled(model: nn.Module, enabled: bool) -> int:
    """Switch every DropKey of ``model`` on/off (e.g. for a final phase); returns their count."""
    mods = dropkey_modules(model)
    for m in mods:
        m.enabled = bool(enabled)
    return len(mods)


def set_dropkey_sampling(model: nn.Module, sampling: bool) -> int:
    """Force DropKey active outside training (Monte-Carlo test-time sampling); returns count."""
    mods = dropkey_modules(model)
    for m in mods:
        m.sampling = bool(sampling)
    return len(mods)


def assign_layer_ids(model: nn.Module) -> int:
    """Make the layer ids of the DropKey modules of ``model`` unique (distinct mask streams).

    In module order, the first module holding an id keeps it and every later one holding a taken
    id gets the next unused one, so a model whose ids are already unique keeps its masks and
    two subtrees numbered on their own (two towers, each ``Regularized``) are told apart. The
    result depends only on the model's structure: the same ids in every process and on resume.
    Returns the number of DropKey modules.
    """
    mods = dropkey_modules(model)
    taken = set()
    following = max((m.layer_id for m in mods), default=-1) + 1
    for m in mods:
        if m.layer_id in taken:
            m.layer_id, following = following, following + 1
        taken.add(m.layer_id)
    return len(mods)


def next_layer_id(model: nn.Module) -> int:
    """The first layer id after those of the DropKey modules already in ``model``."""
    return max((m.layer_id for m in dropkey_modules(model)), default=-1) + 1
