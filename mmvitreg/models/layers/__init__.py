from .dhvt_layers import DAFF, HIMHSA, SOPE, DHVTBlock  # noqa: F401
from .reattention import ReAttention  # noqa: F401
