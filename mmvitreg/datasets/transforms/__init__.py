from .hoi_transforms import (CleanHOIAnnotations, HOIRandomCrop,  # noqa: F401
                             LoadHOIAnnotations, PackHOIInputs)
