from .hoi_transforms import (CleanHOIAnnotations, HOIRandomCrop,  # noqa: F401
                             LoadHOIAnnotations, PackHOIInputs)
from .color_jitter import TorchvisionColorJitter  # noqa: F401
