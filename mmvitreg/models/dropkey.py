"""Registers the parameter-free DropKey attention core (:mod:`mmvitreg.ops.dropkey`) as the
``DropKey`` model type of both toolboxes."""
from mmvitreg.ops.dropkey import DropKey
from mmvitreg.registry import MODELS

MODELS.register_module(module=DropKey)

__all__ = ['DropKey']
