"""High-level APIs: build an HOI model and run it on images (as ``mmdet.apis``)."""
from .inference import hoi_test_pipeline, hoi_triplets, inference_hoi, init_hoi_model

__all__ = ['init_hoi_model', 'inference_hoi', 'hoi_test_pipeline', 'hoi_triplets']
