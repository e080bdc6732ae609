"""Where the keys of an attention call lie on the image: ``num_extra_tokens`` leading tokens
(class, distillation, DHVT head tokens) followed by an ``hw[0] x hw[1]`` grid in row-major order.

Attention sites pass a :class:`TokenGrid` to mechanisms that need the 2-D layout of the keys
(DropKey-Block/Cross); ``None`` means the keys are not on an image grid (e.g. DETR decoder
self-attention over object queries).
"""
from typing import NamedTuple, Optional, Tuple

__all__ = ['TokenGrid', 'square_grid']


class TokenGrid(NamedTuple):
    hw: Tuple[int, int]
    num_extra_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.hw[0] * self.hw[1] + self.num_extra_tokens


def square_grid(num_tokens: int, num_extra_tokens: int) -> Optional[TokenGrid]:
    """The square grid of ``num_tokens - num_extra_tokens`` patches, or None if it is not square."""
    side = int(round(max(num_tokens - num_extra_tokens, 0)**0.5))
    if side < 1 or side * side + num_extra_tokens != num_tokens:
        return None
    return TokenGrid((side, side), num_extra_tokens)
