
from .reattention import ReAttention, apply_reattention, reattend  # noqa: F401
from .dhvt_layers import DAFF, DHVTBlock, HIMHSA, SOPE  # noqa: F401
from .dropkey import DropKey, apply_dropkey, dropkey_attention, sample_keep_mask  # noqa: F401
