
from .deepvit import DeepViT  # noqa: F401
from .dhvt import DHVT  # noqa: F401
from .plain_vit import PlainViT, SimpleFeaturePyramid  # noqa: F401
