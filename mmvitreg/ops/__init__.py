"""Torch-only operators behind the regularizers (no OpenMMLab import here or in subpackages).

``mmvitreg.ops.dropkey`` is the DropKey attention core; ``mmvitreg.ops.token_grid`` describes
where the keys of an attention call lie on the image; ``mmvitreg.ops.attention_cosine`` is
DeepViT's cross-layer cosine loss. Everything under ``mmvitreg.ops`` imports
with torch alone, so it runs where only torch (and timm) is installed, e.g. a bare GPU node.
"""
