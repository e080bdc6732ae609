from . import transforms  # noqa: F401,E402
from .digit_hoi import DigitHOIDataset
from .digit_scenes import DigitScenesDataset
from .digits import DigitsDataset, load_digits_images
from .hico_det import HICODetDataset  # noqa: F401
from .hico_json import HICOInputError

__all__ = ['DigitsDataset', 'load_digits_images', 'HICODetDataset', 'DigitScenesDataset',
           'DigitHOIDataset', 'HICOInputError']
