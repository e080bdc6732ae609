"""An optimizer wrapper that runs the forward pass under autocast on any device.

mmengine's ``AmpOptimWrapper`` refuses to start without an accelerator. ``tools/train.py --amp``
uses it on GPUs (fp16 + dynamic loss scaling) and this wrapper on CPU, where autocast runs in
bfloat16, which needs no loss scaling.
"""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` enables ``torch.autocast``.

    Args:
        dtype: autocast dtype (``'bfloat16'`` by default; ``'float16'`` also works on CPU but gives
            no loss scaling, so prefer ``AmpOptimWrapper`` for fp16 on GPUs).
        device_type: ``'cpu'``, ``'cuda'`` or ``None`` to follow the model's parameters.
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', device_type: str = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: nn.Module):
        device_type = self.device_type
        if device_type is None:
            param = next(model.parameters(), None)
            device_type = param.device.type if param is not None else 'cpu'
        with super().optim_context(model), torch.autocast(device_type=device_type,
                                                          dtype=self.cast_dtype):
            yield
