"""Pictures of predictions: the HOI visualizer and the ``--show-dir`` set-up of tools/test.py."""
from .hoi_visualizer import HOILocalVisualizer, select_triplets
from .show_dir import enable_show_dir, is_hoi_config

__all__ = ['HOILocalVisualizer', 'select_triplets', 'enable_show_dir', 'is_hoi_config']
