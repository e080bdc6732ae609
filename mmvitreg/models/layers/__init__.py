from .reattention import ReAttention  # noqa: F401
from .dhvt_layers import DAFF, DHVTBlock, HIMHSA, SOPE  # noqa: F401
