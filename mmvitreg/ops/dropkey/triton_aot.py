"""The Triton DropKey kernels compiled for an NVIDIA GPU on a machine without one.

Triton's own compiler and the ptxas it ships turn every kernel a call launches into a cubin for
the named architecture, exactly as the first launch on that GPU would (same argument
specialisation, constants, warps and stages), and ptxas reports the resources it assigned:
shared memory, registers, stack (spilled registers). So compile errors, shared memory beyond
the GPU's limit (a launch would fail) and spills (a slow kernel) show before any GPU is lent.

The call runs through the real launch code (:func:`.triton_flash._attention` and its autograd
backward) on CPU tensors; only each launch is replaced by Triton's ``warmup`` (compile, do not
run) under a stand-in driver naming the target. The stand-in forward leaves ``-inf`` in the
log-sum-exp, so a call that checks for rows left without a key also compiles the kernels with
per-row flags, as a GPU run meeting such a row would.
"""
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import torch

from . import triton_flash, triton_kernels

__all__ = ['KernelBuild', 'compile_call', 'compile_shipped_call', 'SHARED_MEMORY_LIMIT',
           'SHIPPED_CALLS']

#: the most shared memory one block may use, in bytes, by compute capability (CUDA C
#: programming guide, "Technical Specifications per Compute Capability")
SHARED_MEMORY_LIMIT = {75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448,
                       100: 232448, 120: 101376}

#: the calls that take the Triton path on a GPU, as the shipped configs make them (per GPU,
#: training): name -> (batch, heads, queries, keys, head dim, dtype, host mask, attention
#: dropout); host mask 'padding' = DETR's key padding, 'bias' = PlainViT's trainable relative-
#: position bias. DETR/QPIC and PlainViT train in fp32 (no AMP in their configs); the ViT-B row
#: is ``benchmarks/gpu_acceptance.py``'s fp16 AMP train step.
SHIPPED_CALLS = {
    'detr-encoder': (2, 8, 850, 850, 32, torch.float32, 'padding', 0.1),
    'detr-decoder-self': (2, 8, 100, 100, 32, torch.float32, None, 0.1),
    'detr-decoder-cross': (2, 8, 100, 850, 32, torch.float32, 'padding', 0.1),
    'plainvit-global': (2, 12, 4096, 4096, 64, torch.float32, 'bias', 0.0),
    'plainvit-window': (50, 12, 196, 196, 64, torch.float32, 'bias', 0.0),
    'vit-b-amp': (128, 12, 197, 197, 64, torch.float16, None, 0.0),
}


@dataclass
class KernelBuild:
    """One compiled kernel: its name, the features it was specialised for, and what ptxas
    assigned (bytes of shared memory, registers per thread, bytes of stack per thread)."""
    kernel: str
    arch: int
    features: str
    num_warps: int
    num_stages: int
    shared: int
    registers: int
    stack: int
    seconds: float

    @property
    def fits(self) -> bool:
        """Whether a launch on the architecture gets its shared memory."""
        return self.shared <= SHARED_MEMORY_LIMIT.get(self.arch, min(SHARED_MEMORY_LIMIT.values()))

    def as_dict(self) -> dict:
        return dict(asdict(self), fits=self.fits)


class _TargetDriver:
    """What Triton's JIT asks its driver while compiling, answered for ``arch``."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget('cuda', arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: Optional[int] = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device('cpu')

    def is_active(self) -> bool:
        return True


class _CompileOnly:
    """Stands in for one JIT kernel: ``kernel[grid](*args, **kwargs)`` compiles it."""

    def __init__(self, name: str, jit, arch: int, builds: Dict[str, KernelBuild]):
        self.name, self.jit, self.arch, self.builds = name, jit, arch, builds

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            start = time.perf_counter()
            compiled = self.jit.warmup(*args, grid=grid, **kwargs)
            seconds = time.perf_counter() - start
            names = self.jit.arg_names
            if 'OUT' in names:  # as if every row had lost all its keys: see the module doc
                args[names.index('LSE')].fill_(float('-inf'))
            if compiled.hash in self.builds:
                return
            features = ','.join(k[4:].lower() for k, v in sorted(kwargs.items())
                                if k.startswith('HAS_') and v)
            meta = compiled.metadata
            usage = _resource_usage(compiled.asm['cubin'])
            self.builds[compiled.hash] = KernelBuild(
                self.name, self.arch, features or '-', meta.num_warps, meta.num_stages,
                meta.shared, usage['REG'], usage['STACK'], round(seconds, 2))
        return launch


def _resource_usage(cubin: bytes) -> Dict[str, int]:
    """``REG``, ``STACK``, ``SHARED``, ``LOCAL`` of the cubin's kernel, from ``cuobjdump``."""
    from triton import knobs
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'kernel.cubin')
        with open(path, 'wb') as f:
            f.write(cubin)
        text = subprocess.run([knobs.nvidia.cuobjdump.path, '-res-usage', path],
                              capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r'\b(REG|STACK|SHARED|LOCAL):(\d+)', text)}


def compile_call(arch: int,
                 q: torch.Tensor,
                 k: torch.Tensor,
                 v: torch.Tensor,
                 ratio: float,
                 *,
                 attn_mask: Optional[torch.Tensor] = None,
                 dropout_p: float = 0.0,
                 config: Optional['triton_flash.TritonConfig'] = None,
                 lanes: str = 'word') -> List[KernelBuild]:
    """Compile, for compute capability ``arch`` (e.g. 90: H100/H200), every kernel the call
    ``triton_dropkey_attention(q, k, v, ratio, key, attn_mask=..., dropout_p=...)`` launches on
    that GPU, forward and backward (q, k, v and a float mask should require grad as in
    training; CPU tensors: only their dtype, shape and strides matter). Raises what Triton's
    compiler raises."""
    from triton.runtime import driver
    config = None if config is None else triton_flash.make_config(config)
    builds: Dict[str, KernelBuild] = {}
    stand_ins = {name: _CompileOnly(name, jit, arch, builds)
                 for name, jit in triton_kernels.build_kernels().items()}
    previous = driver._active  # None until a real driver was needed: restored as it was
    driver.set_active(_TargetDriver(arch))
    try:
        with torch.enable_grad():
            out = triton_flash._attention(q, k, v, ratio, 0, attn_mask=attn_mask,
                                          dropout_p=dropout_p, config=config, lanes=lanes,
                                          arch=arch, kernels=stand_ins)
            if out.requires_grad:
                out.backward(torch.zeros_like(out))
    finally:
        driver.set_active(previous)
    return list(builds.values())


def compile_shipped_call(arch: int, name: str, *, ratio: float = 0.1,
                         config: Optional['triton_flash.TritonConfig'] = None,
                         batch: Optional[int] = 1) -> List[KernelBuild]:
    """:func:`compile_call` for the :data:`SHIPPED_CALLS` entry ``name``. ``batch`` (default 1)
    replaces its batch size: the kernels' specialisation does not depend on it (only on which
    sizes and strides are divisible by 16 or equal 1), and the tensors stay small; None keeps
    the config's."""
    b, h, nq, nk, d, dtype, mask_kind, dropout = SHIPPED_CALLS[name]
    b = b if batch is None else batch
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).requires_grad_()

    q, k, v = rand(b, h, nq, d), rand(b, h, nk, d), rand(b, h, nk, d)
    mask = None
    if mask_kind == 'padding':  # the last image padded on its last keys
        mask = torch.ones(b, 1, 1, nk, dtype=torch.bool)
        mask[-1, ..., nk - nk // 4:] = False
    elif mask_kind == 'bias':
        mask = torch.zeros(b, h, nq, nk).requires_grad_()
    return compile_call(arch, q, k, v, ratio, attn_mask=mask, dropout_p=dropout, config=config)
