"""Loading third-party (official) checkpoints for the model converters."""
import argparse
import os.path as osp
from typing import Mapping

import torch


def load_official_checkpoint(path: str) -> Mapping:
    """Load a checkpoint with ``weights_only=True``, allowing the ``args`` Namespace that the
    official timm/DeiT-style training scripts store next to the weights."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)
