"""The Triton DropKey kernels compiled for sm_90 (H100/H200), sm_100 (B200) and sm_80 (A100) on
this GPU-less machine, through the real launch code: every call the shipped configs make
builds, fits the GPU's shared memory and, with the default tiles, keeps its registers
unspilled."""
import pytest
import torch

from mmvitreg.ops.dropkey import triton_flash
from mmvitreg.ops.dropkey.triton_aot import (SHARED_MEMORY_LIMIT, SHIPPED_CALLS, compile_call,
                                             compile_shipped_call)

pytestmark = pytest.mark.skipif(not triton_flash.triton_available(), reason='no Triton')


@pytest.mark.parametrize('arch', [90, 100, 80])
@pytest.mark.parametrize('call', list(SHIPPED_CALLS))
def test_shipped_calls_build_fit_and_do_not_spill(call, arch):
    """H100/H200 (sm_90), B200 (sm_100) and A100 (sm_80)."""
    builds = compile_shipped_call(arch, call)
    assert {b.kernel for b in builds} == {'forward', 'backward_kv', 'backward_q'}
    assert all(b.arch == arch and b.fits for b in builds), builds
    assert all(0 < b.shared <= SHARED_MEMORY_LIMIT[arch] for b in builds)
    # the default tiles were chosen as the largest that keep every kernel's registers unspilled
    assert [b.stack for b in builds] == [0] * len(builds), builds
    assert all((b.num_warps, b.num_stages) == (4, 2) for b in builds)
    _, _, _, _, _, dtype, mask, dropout = SHIPPED_CALLS[call]
    features = {b.features for b in builds}
    if mask == 'padding':  # rows may lose every key: the row-flag variants are built too
        assert 'allowed,dropout' in features and 'allowed,dropout,flags' in features
    if mask == 'bias':  # the trainable bias's gradient comes from the dQ kernel
        assert any(b.kernel == 'backward_q' and 'dbias' in b.features for b in builds)


def test_the_config_reaches_the_compiled_kernels():
    """Tiles, warps and stages of a TritonConfig are what the compiled kernels were built with
    (larger tiles need more shared memory)."""
    small = compile_shipped_call(90, 'vit-b-amp', config=(64, 32, 8, 3))
    large = compile_shipped_call(90, 'vit-b-amp', config=(128, 64, 8, 3))
    assert all((b.num_warps, b.num_stages) == (8, 3) for b in small + large)
    by_kernel = {b.kernel: b.shared for b in small}
    assert all(b.shared > by_kernel[b.kernel] for b in large)


def test_tiles_beyond_the_gpu_are_reported_as_not_fitting():
    builds = compile_shipped_call(90, 'plainvit-window', config=(128, 128, 8, 2))
    assert not all(b.fits for b in builds)
    assert all(b.fits == (b.shared <= SHARED_MEMORY_LIMIT[90]) for b in builds)


def test_other_architectures_and_the_driver_left_as_found():
    from triton.runtime import driver
    before = driver._active
    q = torch.randn(1, 2, 40, 32, requires_grad=True)
    builds = compile_call(80, q, q.detach().requires_grad_(), q.detach().requires_grad_(), 0.2)
    assert {b.arch for b in builds} == {80} and len(builds) == 3
    assert driver._active is before
