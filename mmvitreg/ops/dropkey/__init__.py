"""DropKey (Li et al., "DropKey for Vision Transformer", CVPR 2023): the torch-only core.

The paper drops attention *logits* before the softmax in training (``attn += bernoulli(p) *
-1e12``), independently per sample, head, query and key, with a ratio decreasing linearly with
depth, plus Block/Cross variants on the key grid. Where this implementation deliberately differs:

* boolean/in-kernel masks instead of ``-1e12`` (which overflows to ``-inf`` in fp16: NaN rows);
* a query whose every key is dropped keeps plain attention for that row (see :mod:`.masks`);
* ``p`` is quantised to 1/65536 (16-bit random lanes);
* masks come from a counter-based hash of (run seed, iteration, layer, rank, call) and the
  element position (:mod:`.random`), not from the global RNG: identical on CPU and CUDA, in any
  chunking, and after ``--resume``;
* no slow path: fused FlexAttention on CUDA (:mod:`.flex`), the CPU flash kernel with boxed masks
  (:mod:`.cpu_flash`), SDPA with query-chunked masks elsewhere, all under a memory budget
  (:mod:`.attention`, :mod:`.budget`).

Imports torch only.
"""
from .attention import dropkey_attention, naive_dropkey_attention
from .budget import default_memory_budget, device_memory, plan_chunks
from .masks import repair_all_dropped, sample_keep_mask
from .module import (DropKey, assign_layer_ids, dropkey_modules, next_layer_id, set_dropkey_enabled,
                     set_dropkey_sampling)
from .random import call_key, get_seed, get_step, next_key, set_seed, set_step
from .schedule import (DROPKEY_BACKENDS, DROPKEY_SCHEDULES, DROPKEY_VARIANTS, block_footprint,
                       check_block_size, check_ratio, check_variant, dropkey_ratios,
                       seed_probability)

__all__ = [
    'DropKey', 'dropkey_modules', 'set_dropkey_enabled', 'set_dropkey_sampling',
    'assign_layer_ids', 'next_layer_id', 'dropkey_ratios', 'check_ratio', 'check_variant',
    'check_block_size',
    'block_footprint', 'seed_probability', 'sample_keep_mask', 'repair_all_dropped',
    'dropkey_attention', 'naive_dropkey_attention', 'default_memory_budget', 'device_memory',
    'plan_chunks', 'call_key', 'next_key', 'set_seed', 'get_seed', 'set_step', 'get_step',
    'DROPKEY_SCHEDULES', 'DROPKEY_VARIANTS', 'DROPKEY_BACKENDS'
]
