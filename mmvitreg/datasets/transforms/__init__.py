from .color_jitter import TorchvisionColorJitter  # noqa: F401
from .hoi_transforms import (CleanHOIAnnotations, HOIRandomCrop, LoadHOIAnnotations,  # noqa: F401
                             PackHOIInputs)
