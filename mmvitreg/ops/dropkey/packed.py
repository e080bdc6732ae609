"""Bit-packed DropKey masks for the fused (FlexAttention) path.

Evaluating the SplitMix64 hash inside FlexAttention's ``score_mod`` costs ~30 integer
instructions per logit (int64 arithmetic is emulated on GPUs) in the forward *and* again in the
backward. Instead, one compiled elementwise pass per call writes the dropped bits, 8 keys per
uint8 word (``(B, H, Nq, ceil(Nk / 8))``, 1/8 byte per logit), and the ``score_mod`` reads one
bit per logit: ``(word[k // 8] >> (k % 8)) & 1``. One byte per word, not four: the kernel
stages the gathered words as a (block of queries x block of keys) tile per pipeline stage, and
int32 tiles overflowed the shared memory of the fp16 kernels on an H200. The bits are exactly
those of :mod:`.random` (lane ``k % 4`` of word ``row * ceil(Nk / 4) + k // 4``); a boolean
host mask (e.g. key padding) is folded into them in the same pass.
"""
from typing import Optional

import torch

from . import compiled
from .compiled import pack_dropped
from .masks import as_4d
from .random import lane_terms
from .schedule import ratio_threshold

__all__ = ['BITS_PER_WORD', 'WORD_DTYPE', 'packed_words', 'packed_drop_bits', 'bit_is_set']

BITS_PER_WORD = 8
WORD_DTYPE = torch.uint8
#: the value of bit ``i`` of a word
_BIT_VALUES = [1 << i for i in range(BITS_PER_WORD)]


def packed_words(num_keys: int) -> int:
    """Words per query row."""
    return -(-num_keys // BITS_PER_WORD)


def packed_drop_bits(key: int, shape, ratio: float, device: torch.device,
                     allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """uint8 ``(B, H, Nq, ceil(Nk / 8))``: bit ``k % 8`` of word ``k // 8`` set where logit
    ``(b, h, q, k)`` is dropped by DropKey (random variant) or not ``allowed`` by the host's
    boolean mask (broadcastable to ``(B, H, Nq, Nk)``). One compiled loop (:mod:`.compiled`)
    on CUDA and for CPU masks of at least :data:`.compiled.MIN_LOGITS` logits; eager ops
    otherwise or when the compiled loops are off."""
    b, h, nq, nk = (int(s) for s in shape)
    width = packed_words(nk) * BITS_PER_WORD
    rows = torch.arange(b * h * nq, dtype=torch.int64, device=device)
    row_term, col_term, shift = lane_terms(key, rows, nk)  # padding keys: read as kept
    row_term = row_term.view(b, h, nq, 1)
    col_term = torch.nn.functional.pad(col_term, (0, width - nk))
    shift = torch.nn.functional.pad(shift, (0, width - nk))
    threshold = torch.tensor(ratio_threshold(ratio), dtype=torch.int64, device=device)
    bit_values = torch.tensor(_BIT_VALUES, dtype=torch.int64, device=device)
    out = torch.empty(b, h, nq, width // BITS_PER_WORD, dtype=WORD_DTYPE, device=device)
    use_compiled = device.type == 'cuda' or b * h * nq * width >= compiled.MIN_LOGITS
    if not use_compiled or compiled.compiled_pack_dropped(
            row_term, col_term, shift, threshold, bit_values, out) is None:
        pack_dropped(row_term, col_term, shift, threshold, bit_values, out)
    if allowed is not None:
        allowed = as_4d(allowed)
        blocked = torch.zeros(tuple(allowed.shape[:-1]) + (width, ), dtype=torch.bool,
                              device=device)
        blocked[..., :nk] = ~allowed
        pad = blocked.reshape(blocked.shape[:-1] + (width // BITS_PER_WORD, BITS_PER_WORD))
        out |= (pad.to(torch.int64) * bit_values).sum(-1).to(WORD_DTYPE)
    return out


def bit_is_set(words: torch.Tensor, b, h, q_idx, kv_idx) -> torch.Tensor:
    """Inside a ``score_mod``: whether the bit of logit ``(b, h, q_idx, kv_idx)`` is set."""
    word = words[b, h, q_idx, kv_idx // BITS_PER_WORD]
    return ((word >> (kv_idx % BITS_PER_WORD)) & 1) != 0
