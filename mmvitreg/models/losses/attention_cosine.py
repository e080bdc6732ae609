"""Kept import path: DeepViT's cross-layer cosine loss lives in
:mod:`mmvitreg.ops.attention_cosine` (torch only, used by the ``attention_cosine`` key)."""
from mmvitreg.ops.attention_cosine import OFFICIAL_WEIGHT, attention_cosine_loss  # noqa: F401

__all__ = ['attention_cosine_loss', 'OFFICIAL_WEIGHT']
