from .digits import DigitsDataset, load_digits_images

__all__ = ['DigitsDataset', 'load_digits_images']
