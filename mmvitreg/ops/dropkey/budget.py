"""DropKey's memory budget: the bytes the mask of one call (or one box of it) may use.

The default is 1/2048 of the device's memory (:func:`default_memory_budget`): 12 MiB on a
24 GiB CPU machine, 40 MiB on an 80 GB GPU. A mask costs ``itemsize`` bytes per logit on the CPU
flash path (the additive mask only), ``1 + itemsize`` otherwise (bits + the additive mask SDPA
derives from them).
"""
import math
import os
from typing import Union

import torch

__all__ = ['MEMORY_FRACTION', 'device_memory', 'default_memory_budget', 'plan_chunks']

MEMORY_FRACTION = 2048


def device_memory(device: Union[str, torch.device]) -> int:
    """Total memory of ``device`` in bytes (CUDA: the GPU's; CPU: physical RAM)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def default_memory_budget(device: Union[str, torch.device]) -> int:
    """Default bytes for one chunk's mask: ``device_memory(device) // 2048`` (at least 1 MiB)."""
    return max(1 << 20, device_memory(device) // MEMORY_FRACTION)


def plan_chunks(num_queries: int, bytes_per_query: int, budget: int) -> int:
    """Queries per chunk: all if they fit ``budget``, else the largest equal chunks that fit."""
    per = max(1, budget // max(1, bytes_per_query))
    if per >= num_queries:
        return num_queries
    n = math.ceil(num_queries / per)
    return math.ceil(num_queries / n)
