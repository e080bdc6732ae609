"""The ``dropkey`` key: where DropKey goes (targets, schedules per group, key grids) and the
errors for hosts it cannot serve."""
import copy
import logging

import pytest
import torch
from mmengine.registry import DefaultScope

import mmvitreg  # noqa: F401
from mmvitreg.ops.dropkey import dropkey_modules
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.dropkey import attach_dropkey, extra_tokens_of
from tests.regularizers.common import TINY_VIT


def _vit(layers=4):
    cfg = copy.deepcopy(TINY_VIT)
    cfg['arch']['num_layers'] = layers
    return MODELS.build(cfg)


def test_groups_schedule_separately_and_claim_layers_once():
    model = _vit()
    rows = attach_dropkey(model, dict(targets=[
        dict(name='layers.0', ratio=0.5, schedule='constant'),
        dict(name='layers.*', ratio=0.3, schedule='decrease', min_ratio=0.1)]))
    mods = dropkey_modules(model)
    # layer 0 belongs to the first group; the second schedules over the 3 layers left
    assert [m.ratio for m in mods] == pytest.approx([0.5, 0.3, 0.2, 0.1])
    assert [m.layer_id for m in mods] == [0, 1, 2, 3]  # distinct mask streams
    assert [r[0] for r in rows] == [f'layers.{i}.attn' for i in range(4)]
    assert all(r[1] == 'DropKey' and 'ratio=' in r[2] for r in rows)
    with pytest.raises(ValueError, match="DropKey is already attached to 'layers.0.attn'"):
        attach_dropkey(model, dict(ratio=0.1))


def test_option_errors():
    with pytest.raises(KeyError, match=r"unknown dropkey target option\(s\) \['rate'\]"):
        attach_dropkey(_vit(), dict(targets=[dict(name='layers.0', rate=0.1)]))
    with pytest.raises(ValueError, match='targets must be strings or dicts, got 3'):
        attach_dropkey(_vit(), dict(targets=[3]))
    with pytest.raises(ValueError, match='mc_samples must be an integer >= 1, got 0'):
        attach_dropkey(_vit(), dict(mc_samples=0))
    with pytest.raises(TypeError, match='dropkey options must be a dict'):
        attach_dropkey(_vit(), 0.1)


def test_host_without_supported_attention_lists_the_supported_types():
    with pytest.raises(ValueError, match=r"target '' matched no supported attention module in "
                       r"LeNet5; supported attention types: \[.*'Attention'.*"
                       r"'MultiheadAttention'"):
        MODELS.build(dict(type='Regularized', host='LeNet5', num_classes=10,
                          dropkey=dict(ratio=0.1)))


def test_extra_tokens_come_from_the_enclosing_backbone():
    deit = MODELS.build(dict(TINY_VIT, type='DistilledVisionTransformer'))
    assert extra_tokens_of(deit, 'layers.1.attn') == 2
    assert extra_tokens_of(_vit(), 'layers.0.attn') == 1
    timm = pytest.importorskip('timm')
    net = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            depth=1, reg_tokens=2, no_embed_class=True)
    assert extra_tokens_of(net, 'blocks.0.attn') == 3  # class + 2 register tokens


def _tiny_detr(dropkey):
    from tests.models.test_dropkey_hosts import _tiny_detr_cfg
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(_tiny_detr_cfg(dropkey))


@pytest.mark.parametrize('variant', ['block', 'cross'])
def test_block_variants_refuse_detr_queries_naming_the_module(variant):
    with pytest.raises(ValueError, match=rf"variant '{variant}' needs the keys on an image "
                       r"grid, but the keys of 'decoder.layers.0.self_attn' "
                       r'\(MultiheadAttention\)'):
        _tiny_detr(dict(ratio=0.1, variant=variant, targets=['decoder.self_attn']))


def test_block_variant_on_vit_grids():
    """Square ViT grids work; a non-square one is one clear error at the call."""
    model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              dropkey=dict(ratio=0.3, variant='block', block_size=2)))
    model.train()
    out = model(torch.randn(2, 3, 16, 16))[0]
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match='grid') as err:
        model(torch.randn(2, 3, 16, 24))
    assert '\n' not in str(err.value)


def _repaired_row_warnings(caplog, **dropkey):
    from mmvitreg.ops.dropkey import module
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                                  dropkey=dropkey))
    return model, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_high_ratio_on_few_keys_warns_at_build(caplog):
    """At 0.99 on 17 keys (16 patches + class token) 84 % of the rows would be all dropped and
    repaired to plain attention: one warning per layer at build, none at the paper's settings."""
    _, warned = _repaired_row_warnings(caplog, ratio=0.99, schedule='constant')
    assert len(warned) == 2 and all('on 17 keys' in w and '84.' in w for w in warned)
    model, warned = _repaired_row_warnings(caplog, ratio=0.1, schedule='decrease')
    assert warned == []
    model.train()  # nor at the first training call
    with caplog.at_level(logging.WARNING):
        model(torch.randn(2, 3, 16, 16))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    _, warned = _repaired_row_warnings(caplog, ratio=0.9, variant='block', block_size=2,
                                       schedule='constant')
    assert len(warned) == 2  # the block variant is estimated from its own masks


def test_high_ratio_warns_at_the_first_call_where_keys_are_unknown(caplog):
    from mmvitreg.ops.dropkey import DropKey, module
    m = DropKey(0.99).train()
    q = torch.randn(1, 1, 3, 4)
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        m(q, torch.randn(1, 1, 17, 4), torch.randn(1, 1, 17, 4))
        m(q, torch.randn(1, 1, 17, 4), torch.randn(1, 1, 17, 4))  # once per key count
    assert len([r for r in caplog.records if 'on 17 keys' in r.getMessage()]) == 1
