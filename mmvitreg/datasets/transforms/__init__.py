
from .hoi_transforms import HOIRandomCrop, LoadHOIAnnotations, PackHOIInputs  # noqa: F401
