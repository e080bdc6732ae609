"""DropKey under activation checkpointing: the recomputed forward draws the forward's mask."""
import pytest
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from mmvitreg.ops.dropkey import DropKey, assign_layer_ids
from mmvitreg.ops.dropkey.random import reset_context, set_step


class _Block(nn.Module):
    def __init__(self, dim=16, heads=2, ratio=0.3):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.1)  # draws from the global RNG between DropKey calls
        self.dropkey = DropKey(ratio)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = self.dropkey(q, k, v).transpose(1, 2).reshape(b, n, c)
        return x + self.drop(self.proj(out))


class _Net(nn.Module):
    def __init__(self, with_cp=None):
        super().__init__()
        self.blocks = nn.ModuleList(_Block() for _ in range(3))
        self.with_cp = with_cp

    def forward(self, x):
        for block in self.blocks:
            if self.with_cp is None:
                x = block(x)
            else:
                x = checkpoint(block, x, use_reentrant=self.with_cp)
        return x


def _grads(net, x, with_cp, passes=2):
    net.with_cp = with_cp
    net.zero_grad()
    reset_context()
    torch.manual_seed(1)
    set_step(5)
    loss = sum((net(x) ** 2).sum() for _ in range(passes))  # two forwards, one backward
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize('reentrant', [True, False])
def test_checkpointed_grads_equal_plain_grads(reentrant):
    torch.manual_seed(0)
    net = _Net()
    assign_layer_ids(net)
    x = torch.randn(2, 17, 16, requires_grad=True)  # reentrant checkpoint needs it
    ref = _grads(net, x, None)
    got = _grads(net, x, reentrant)
    assert (got - ref).norm() <= 1e-6 * ref.norm()
    # DropKey really drops keys here: without it the gradients differ
    for m in net.modules():
        if isinstance(m, DropKey):
            m.enabled = False
    plain = _grads(net, x, None)
    assert (plain - ref).norm() > 1e-2 * ref.norm()


def test_timm_grad_checkpointing_with_dropkey_and_drop_path():
    """The user's case: a timm ViT with ``set_grad_checkpointing()``, DropKey and stochastic
    depth (which draws from the global RNG inside the checkpointed blocks)."""
    timm = pytest.importorskip('timm')
    from mmvitreg.regularizers import apply_regularizers
    torch.manual_seed(0)
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=3, embed_dim=32, num_heads=2, num_classes=5,
                            drop_path_rate=0.1)
    apply_regularizers(net, dropkey=dict(ratio=0.3, schedule='constant'))
    net.train()
    x = torch.randn(2, 3, 32, 32)

    def grads(with_cp):
        net.set_grad_checkpointing(with_cp)
        net.zero_grad()
        reset_context()
        torch.manual_seed(1)
        set_step(2)
        net(x).square().sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])

    ref = grads(False)
    assert (grads(True) - ref).norm() <= 1e-6 * ref.norm()


def test_checkpoint_without_rng_preservation_warns(caplog):
    import logging

    from mmvitreg.ops.dropkey import module
    torch.manual_seed(0)
    net = _Net()
    assign_layer_ids(net)
    x = torch.randn(2, 17, 16, requires_grad=True)
    reset_context()
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        y = x
        for block in net.blocks:
            y = checkpoint(block, y, use_reentrant=False, preserve_rng_state=False)
        y.sum().backward()
    assert any('preserve_rng_state=False' in r.getMessage() for r in caplog.records)
