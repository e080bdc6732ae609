"""Attention stages: ``attend`` composes registered stages by phase, takes the same fast paths as
before the stages existed (plain SDPA when nothing acts, DropKey's own kernel when it is alone),
and knows no mechanism by name."""
import copy
import inspect

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmvitreg  # noqa: F401
import mmvitreg.ops.dropkey.module as dropkey_module
from mmvitreg.ops.dropkey import DropKey
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import apply_regularizers
from mmvitreg.regularizers import attention as attention_module
from mmvitreg.regularizers.attention import (AttentionRecorder, add_attention_stage, attend,
                                             attention_plan)
from mmvitreg.regularizers.stage import ATTENTION_STAGES, AttentionStage, register_attention_stage
from mmvitreg.regularizers.stages.reattention import HeadMixing
from tests.regularizers.common import TINY_VIT


def _qkv(heads=2, n=5, d=4):
    torch.manual_seed(0)
    return tuple(torch.randn(2, heads, n, d) for _ in range(3))


@pytest.fixture
def toy_stages():
    """Four toy stages, one per phase, each leaving a recognisable mark."""

    class Mark(nn.Module):

        def __init__(self, value):
            super().__init__()
            self.value = value

    class AddToLogits(AttentionStage):
        child, phase = 'toy_logits', 'logits'

        def apply(self, mech, x, call):
            return x + mech.value

    class ScaleProbs(AttentionStage):
        child, phase = 'toy_probs', 'probs'

        def apply(self, mech, x, call):
            return x * mech.value

    class AddToMaps(AttentionStage):
        child, phase = 'toy_mixing', 'mixing'

        def apply(self, mech, x, call):
            return x + mech.value

    class ScaleOutput(AttentionStage):
        child, phase = 'toy_output', 'output'

        def apply(self, mech, x, call):
            return x * mech.value

    classes = (AddToLogits, ScaleProbs, AddToMaps, ScaleOutput)
    for cls in classes:
        register_attention_stage(cls)
    yield Mark
    for cls in classes:
        ATTENTION_STAGES.pop(cls.child)


def test_phases_compose_in_order_whatever_the_attach_order(toy_stages):
    q, k, v = _qkv()
    logits = (q @ k.transpose(-2, -1)) * 4**-0.5
    bias = torch.randn(5, 5)
    expected = ((((logits + bias).softmax(-1)) * 2.0 + 0.25) @ v) * 3.0
    for order in (('toy_logits', 'toy_probs', 'toy_mixing', 'toy_output'),
                  ('toy_output', 'toy_mixing', 'toy_probs', 'toy_logits')):
        values = dict(toy_logits=bias, toy_probs=2.0, toy_mixing=0.25, toy_output=3.0)
        module = nn.Module()
        for name in order:
            module.add_module(name, toy_stages(values[name]))
        assert attention_plan(module).path == 'explicit'
        torch.testing.assert_close(attend(module, q, k, v), expected)


def test_output_stage_alone_runs_after_plain_sdpa(toy_stages):
    q, k, v = _qkv()
    module = nn.Module()
    module.toy_output = toy_stages(3.0)
    assert attention_plan(module).path == 'sdpa'
    assert torch.equal(attend(module, q, k, v), F.scaled_dot_product_attention(q, k, v) * 3.0)


def test_stages_of_one_phase_apply_in_the_order_they_were_added(toy_stages):

    class Square(AttentionStage):
        child, phase = 'toy_square', 'probs'

        def apply(self, mech, x, call):
            return x * x

    register_attention_stage(Square)
    try:
        q, k, v = _qkv()
        probs = ((q @ k.transpose(-2, -1)) * 4**-0.5).softmax(-1)
        first, second = nn.Module(), nn.Module()
        first.toy_probs, first.toy_square = toy_stages(2.0), toy_stages(None)
        second.toy_square, second.toy_probs = toy_stages(None), toy_stages(2.0)
        torch.testing.assert_close(attend(first, q, k, v), ((probs * 2.0)**2) @ v)
        torch.testing.assert_close(attend(second, q, k, v), (probs**2 * 2.0) @ v)
    finally:
        ATTENTION_STAGES.pop('toy_square')


def _vit(**regularizers):
    torch.manual_seed(0)
    return MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                             **regularizers))


def test_fast_paths_are_the_ones_taken_before_stages(monkeypatch):
    """Eval or nothing active: the host's own call; DropKey alone in training: its kernel
    (``dropkey_attention``), never materialised maps; DropKey with Re-attention or a recorder:
    the explicit rule."""
    kernel_calls = []
    real_kernel = dropkey_module.dropkey_attention

    def spy(*args, **kwargs):
        kernel_calls.append(args[0].shape)
        return real_kernel(*args, **kwargs)

    monkeypatch.setattr(dropkey_module, 'dropkey_attention', spy)
    model = _vit(dropkey=dict(ratio=0.3, schedule='constant'), reattention=dict(last_k=1))
    attns = [layer.attn for layer in model.layers]
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert [attention_plan(a).path for a in attns] == ['sdpa', 'explicit']
    assert not attns[0].scaled_dot_product_attention.active  # the host's own slot runs
    model.train()
    assert [attention_plan(a).path for a in attns] == ['dropkey', 'explicit']
    recorder = AttentionRecorder('softmax', detach=False)
    assert attention_plan(attns[0], recorder=recorder).path == 'explicit'
    # diagnostics switch DropKey off: Re-attention alone is explicit, the plain layer plain
    assert attention_plan(attns[0], recorder=AttentionRecorder()).stages == ()
    with torch.no_grad():
        model(x)
    assert len(kernel_calls) == 1  # layer 0 only: DropKey's kernel; layer 1 composed
    # DropKey's kernel gives what the explicit rule gives with the same mask
    q, k, v = (torch.randn(2, 2, 17, 16) for _ in range(3))
    dropkey = attns[0].dropkey
    kernel = dropkey(q, k, v, key=7)
    keep = dropkey.keep_mask(q, k, key=7)
    logits = ((q @ k.transpose(-2, -1)) * 16**-0.5).masked_fill(~keep, float('-inf'))
    torch.testing.assert_close(kernel, logits.softmax(-1) @ v, atol=1e-6, rtol=1e-6)


def test_eval_outputs_are_bit_identical_to_the_plain_host():
    plain = _vit()
    model = _vit(dropkey=dict(ratio=0.3))
    model.load_state_dict(plain.state_dict())
    plain.eval(), model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])


def test_attend_names_no_mechanism():
    source = ''.join(inspect.getsource(fn) for fn in (
        attend, attention_plan, attention_module.active_stages,
        attention_module._explicit_attention)).lower()
    for name in ('dropkey', 'reattention', 'attention_dropout', 'mixing('):
        assert name not in source, name


def test_stage_registration_and_attachment_errors():

    class NoPhase(AttentionStage):
        child, phase = 'toy_nophase', 'after_softmax'

    with pytest.raises(ValueError, match=r"NoPhase.phase must be one of \('logits', 'probs', "
                       r"'mixing', 'output'\), got 'after_softmax'"):
        register_attention_stage(NoPhase)

    class Clash(AttentionStage):
        child, phase = 'dropkey', 'probs'

    with pytest.raises(KeyError, match="child 'dropkey' is already registered by DropKeyStage"):
        register_attention_stage(Clash)
    module = copy.deepcopy(_vit().layers[0].attn)
    with pytest.raises(KeyError, match="no attention stage is registered for child 'extra'"):
        add_attention_stage(module, 'extra', nn.Identity())
    add_attention_stage(module, 'reattention', HeadMixing(2))
    with pytest.raises(ValueError, match="MultiheadAttention already has a 'reattention' child"):
        add_attention_stage(module, 'reattention', HeadMixing(2))


def test_a_mechanism_on_a_bare_torch_host_via_the_registered_key():
    """The keys work on a model built without OpenMMLab registries (timm)."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=2)
    apply_regularizers(net, dropkey=dict(ratio=0.2))  # decreasing: 0.2, then 0
    assert all(isinstance(b.attn.dropkey, DropKey) for b in net.blocks)
    net.train()
    assert [attention_plan(b.attn).path for b in net.blocks] == ['dropkey', 'sdpa']
