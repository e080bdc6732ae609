"""The ``Regularized`` keys: unknown keys, collisions with host arguments, the summary table,
order independence and adding a regularizer."""
import copy
import logging

import pytest
import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.models import Regularized
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import REGULARIZERS, apply_regularizers, register_regularizer
from mmvitreg.regularizers.model import LossTerm, add_loss_term
from mmvitreg.regularizers.registry import format_summary
from tests.regularizers.common import TINY_VIT, cls_samples, vit_classifier_cfg

KNOWN = r"\['dropkey', 'drloc', 'reattention'\]"


def test_known_keys():
    assert {'dropkey', 'drloc', 'reattention'} <= set(REGULARIZERS)


def test_unknown_key_lists_the_known_keys():
    with pytest.raises(KeyError, match=r"unknown regularizer key\(s\) \['dropkye'\]; known "
                       r'regularizer keys: \[.*\'dropkey\''):
        apply_regularizers(nn.Linear(2, 2), dropkye=dict(ratio=0.1))
    # through the config type the misspelt key reaches the host, whose error gets the hint
    with pytest.raises(TypeError, match=r"'dropkye'.*known regularizer keys are \[.*'dropkey'"):
        MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                          dropkye=dict(ratio=0.1)))


def test_collision_with_a_host_argument_is_one_error():
    with pytest.raises(ValueError, match=r"DeepViT takes its own argument\(s\) \['reattention'\]"
                       r'.*not as Regularized keys'):
        MODELS.build(dict(type='Regularized', host='DeepViT', reattention=False))
    # host arguments go to the host, Regularized keys apply on top of it
    tiny = dict(embed_dims=24, num_layers=2, num_heads=3, feedforward_channels=48)
    model = MODELS.build(dict(type='Regularized', host='DeepViT', arch=tiny, img_size=16,
                              patch_size=4, dropkey=dict(ratio=0.1)))
    assert all(hasattr(layer.attn, 'reattention') for layer in model.layers)
    assert all(hasattr(layer.attn, 'dropkey') for layer in model.layers)


def test_regularized_needs_a_host_and_skips_off_keys():
    with pytest.raises(ValueError, match="Regularized needs `host`"):
        Regularized(dropkey=dict(ratio=0.1))
    torch.manual_seed(0)
    plain = MODELS.build(TINY_VIT)
    torch.manual_seed(0)
    off = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                            dropkey=None, reattention=False, drloc=None))
    assert type(off) is type(plain)
    assert list(off.state_dict()) == list(plain.state_dict())
    assert not any(hasattr(m, 'dropkey') for m in off.modules())
    on = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                           dropkey=True))  # True: the defaults
    assert [m.dropkey.ratio for m in (layer.attn for layer in on.layers)] == \
        pytest.approx([0.1, 0.0])


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_summary_table_is_logged_on_build():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = _Records()
    logger.addHandler(records)
    try:
        MODELS.build(vit_classifier_cfg(dropkey=dict(ratio=0.4, schedule='decrease'),
                                        reattention=dict(last_k=1), drloc=dict(num_pairs=4)))
    finally:
        logger.removeHandler(records)
    tables = [m for m in records.messages if 'mmvitreg regularizers on ImageClassifier' in m]
    assert len(tables) == 1, records.messages
    lines = tables[0].splitlines()
    assert lines[1].split() == ['module', 'mechanism', 'settings']
    row0 = next(line for line in lines if line.startswith('backbone.layers.0.attn') and
                'DropKey' in line)
    row1 = next(line for line in lines if line.startswith('backbone.layers.1.attn') and
                'DropKey' in line)
    assert 'ratio=0.4' in row0 and 'ratio=0' in row1 and 'ratio=0.4' not in row1
    assert any(line.startswith('backbone.layers.1.attn') and 'Re-attention' in line
               for line in lines)
    assert any('DRLoc' in line and 'backbone.ln1' in line for line in lines)


def test_format_summary_aligns_columns():
    text = format_summary([('a.b', 'DropKey', 'ratio=0.1'), ('long.module.path', 'DRLoc', 'x')])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith('module')
    assert lines[2].index('DropKey') == lines[3].index('DRLoc') == lines[0].index('mechanism')


def _with(order):
    torch.manual_seed(0)
    host = MODELS.build(TINY_VIT)
    cfgs = dict(dropkey=dict(ratio=0.3, schedule='constant'), reattention=dict(last_k=1))
    torch.manual_seed(1)
    return apply_regularizers(host, **{k: cfgs[k] for k in order})


def test_no_hidden_order_between_keys():
    a = _with(['dropkey', 'reattention'])
    b = _with(['reattention', 'dropkey'])
    # the same modules (children are listed in the order they were added)
    assert sorted((n, type(m).__name__, m.extra_repr()) for n, m in a.named_modules()) == \
        sorted((n, type(m).__name__, m.extra_repr()) for n, m in b.named_modules())
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a.eval(), b.eval()
        assert torch.equal(a(x)[0], b(x)[0])
        a.train(), b.train()
        torch.manual_seed(3)
        out_a = a(x)[0]
        torch.manual_seed(3)
        assert torch.equal(out_a, b(x)[0])
    # the same through the config type (keys in either order)
    builds = []
    for keys in (('dropkey', 'reattention'), ('reattention', 'dropkey')):
        extra = {k: dict(dropkey=dict(ratio=0.3), reattention=dict(last_k=1))[k] for k in keys}
        torch.manual_seed(0)
        builds.append(MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                                        **extra)))
    assert sorted((n, m.extra_repr()) for n, m in builds[0].named_modules()) == \
        sorted((n, m.extra_repr()) for n, m in builds[1].named_modules())


class ConstantTerm(LossTerm):

    def __init__(self, value):
        super().__init__()
        self.value = value

    def finish(self, inputs, data_samples):
        return {} if inputs is None else {'loss_const': torch.tensor(self.value)}


def test_adding_a_regularizer_is_one_function():
    """The 'add a regularizer' recipe: one registered attach function, no order number."""

    @register_regularizer('constant_loss')
    def attach(model, cfg):
        add_loss_term(model, 'constant_loss', ConstantTerm(cfg.get('value', 1.0)))
        return [('', 'constant loss', f"value={cfg.get('value', 1.0)}")]

    try:
        with pytest.raises(KeyError, match="'constant_loss' is already registered"):
            register_regularizer('constant_loss')(lambda model, cfg: [])
        model = MODELS.build(vit_classifier_cfg(constant_loss=dict(value=2.5),
                                                drloc=dict(num_pairs=4)))
        losses = model.loss(torch.randn(2, 3, 16, 16), cls_samples(2))
        assert set(losses) == {'loss', 'loss_drloc', 'loss_const'}
        assert losses['loss_const'].item() == 2.5
        clone = copy.deepcopy(model)
        assert 'loss_const' in clone.loss(torch.randn(2, 3, 16, 16), cls_samples(2))
    finally:
        REGULARIZERS.pop('constant_loss', None)
