"""Test helpers: tiny generated datasets in real on-disk formats and config smoke runs."""
from .coco import make_coco_dataset
from .hico import make_hico_dataset
from .smoke import infer_cls_img_size, last_losses, shrink_config, smoke_train

__all__ = ['make_coco_dataset', 'make_hico_dataset', 'smoke_train', 'shrink_config',
           'last_losses', 'infer_cls_img_size']
