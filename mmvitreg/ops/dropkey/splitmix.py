"""SplitMix64 (Steele, Lea & Flood 2014, with Vigna's finaliser) on Python ints and int64 tensors.

Output number ``i`` of the stream seeded with ``s`` is ``mix64(s + (i + 1) * GOLDEN)``. Tensors
hold the unsigned 64-bit values as int64 with wrap-around; int64 ``>>`` is arithmetic, so the
logical shifts mask off the sign-extended bits.
"""
import torch

__all__ = ['GOLDEN', 'MUL1', 'MUL2', 'SHIFTS', 'signed', 'mix64', 'mix64_', 'mix64_sum',
           'mix64_tensor', 'lane_below']

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
#: the finaliser: ``x ^= x >> shift`` then, except for the last, ``x *= mul``
SHIFTS = ((30, MUL1), (27, MUL2), (31, None))


def signed(x: int) -> int:
    """Unsigned 64-bit int -> the int64 with the same bits."""
    x &= MASK64
    return x - (1 << 64) if x >> 63 else x


def mix64(x: int) -> int:
    """The finaliser on a Python int (unsigned 64-bit in, unsigned 64-bit out)."""
    x &= MASK64
    for shift, mul in SHIFTS:
        x ^= x >> shift
        if mul is not None:
            x = (x * mul) & MASK64
    return x


def mix64_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """The finaliser in place on an int64 tensor (``tmp``: scratch of the same shape)."""
    for shift, mul in SHIFTS:
        torch.bitwise_right_shift(x, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        x.bitwise_xor_(tmp)
        if mul is not None:
            x.mul_(signed(mul))
    return x


def mix64_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The finaliser of ``a + b`` (broadcast) with eager in-place ops, in a new tensor."""
    x = a + b
    return mix64_(x, torch.empty_like(x))


def mix64_tensor(x: torch.Tensor) -> torch.Tensor:
    """The finaliser out of place (for compiled code and FlexAttention's ``score_mod``: one
    fused loop)."""
    for shift, mul in SHIFTS:
        x = x ^ ((x >> shift) & ((1 << (64 - shift)) - 1))
        if mul is not None:
            x = x * signed(mul)
    return x


def lane_below(word: torch.Tensor, shift, threshold) -> torch.Tensor:
    """Bool: the 16-bit lane ``word >> shift`` of an output word, plus 32768 (offset binary: the
    int16 lane + 32768, i.e. the unsigned lane with its top bit flipped), is below ``threshold``
    -- DropKey's drop rule, out of place (compiled code and FlexAttention's ``score_mod``)."""
    return (((word >> shift) & 0xFFFF) ^ 0x8000) < threshold
