
from .drloc_head import DRLocHead  # noqa: F401
from .qpic_head import QPICHead, qpic_postprocess  # noqa: F401
