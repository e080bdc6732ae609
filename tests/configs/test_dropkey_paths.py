"""Which DropKey path the shipped configs' attention calls take, on CPU and on CUDA.

One training iteration of each DropKey config on tiny data records every DropKey call (its
q/k/v, the host's mask and attention dropout, as the host passes them); ``dropkey_path`` then
names the path the call took here (CPU) and the one it takes on a GPU. DETR and QPIC keep the
official attention dropout 0.1 and pass a boolean key padding; PlainViT passes a trainable
relative-position bias. On CPU none of them may fall back to the chunked path that recomputes
the forward in backward (their hosts' own attention takes SDPA's math path and holds the logits
anyway). On CUDA all three take the Triton flash kernel (mask and dropout hashed per tile, no
mask tensor at any shape; :mod:`mmvitreg.ops.dropkey.triton_flash`); the clean-shape ViT takes
FlexAttention.
"""
import os.path as osp

import pytest
import torch

from mmvitreg.ops.dropkey import DropKey
from mmvitreg.ops.dropkey.attention import dropkey_path
from mmvitreg.testing import smoke_train

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GPU_BUDGET = (80 << 30) // 2048  # DropKey's default memory budget on an 80 GB GPU

CASES = [
    # (config, task, host's attention dropout, host mask, path on CPU, path on CUDA)
    ('configs/dropkey/detr_r50_dropkey_8xb2-150e_coco.py', 'det', 0.1, 'bool', 'sdpa', 'triton'),
    ('configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py', 'hoi', 0.1, 'bool', 'sdpa', 'triton'),
    ('configs/dropkey/mask-rcnn_plainvit-b_dropkey_8xb2-1x_coco.py', 'det', 0.0, 'bias', 'sdpa',
     'triton'),
    ('configs/dropkey/vit-small-p4_dropkey_1xb128-300e_cifar100.py', 'cls', 0.0, None,
     'cpu_flash', 'flex'),
]


def _record_calls(monkeypatch):
    calls = []
    original = DropKey.forward

    def forward(self, q, k, v, attn_mask=None, dropout_p=0.0, *args, **kwargs):
        if self.active:
            calls.append((q.detach(), k.detach(), v.detach(), attn_mask, dropout_p, self.ratio))
        return original(self, q, k, v, attn_mask, dropout_p, *args, **kwargs)

    monkeypatch.setattr(DropKey, 'forward', forward)
    return calls


@pytest.mark.parametrize('config, task, dropout, mask, cpu_path, cuda_path', CASES,
                         ids=[osp.basename(c[0]) for c in CASES])
def test_shipped_configs_take_a_fast_path(config, task, dropout, mask, cpu_path, cuda_path,
                                          tmp_path, monkeypatch):
    calls = _record_calls(monkeypatch)
    torch.manual_seed(0)
    smoke_train(osp.join(ROOT, config), str(tmp_path), task=task)
    assert calls, 'no active DropKey call in a training iteration'
    for q, k, v, attn_mask, dropout_p, ratio in calls:
        assert dropout_p == pytest.approx(dropout)
        if mask == 'bool':  # key padding; the decoder's self-attention has none
            assert attn_mask is None or attn_mask.dtype == torch.bool
        elif mask == 'bias':
            assert attn_mask.is_floating_point() and attn_mask.requires_grad
        else:
            assert attn_mask is None
        kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p)
        assert dropkey_path(q, k, v, ratio, **kwargs) == cpu_path
        assert dropkey_path(q, k, v, ratio, device_type='cuda', memory_budget=GPU_BUDGET,
                            **kwargs) == cuda_path
