"""docs/DESIGN.md's recipes, followed as written: each code block goes where its recipe says
(a new file in the package's directory, found the way the recipe says it is found) and the
mechanism or host then works on a real model."""
import copy
import importlib
import pathlib
import re
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers import REGULARIZERS, apply_regularizers
from mmvitreg.regularizers.attention import ATTENTION_SITES, attention_plan, attention_probs
from mmvitreg.regularizers.stage import ATTENTION_STAGES
from tests.regularizers.common import TINY_VIT, cls_samples, vit_classifier_cfg

DESIGN = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'DESIGN.md'


def recipe_files():
    """``{package path: code}`` of the code blocks whose first line is ``# file: <path>``."""
    blocks = re.findall(r'```python\n# file: (\S+)\n(.*?)```', DESIGN.read_text(), re.S)
    return dict(blocks)


@pytest.fixture
def place(tmp_path, monkeypatch):
    """Put a recipe's file into its package (an extra directory on the package's path, as if
    the file were in the source tree) and undo it afterwards."""
    added = []

    def _place(path: str, package):
        folder = tmp_path / package.__name__
        folder.mkdir(exist_ok=True)
        (folder / pathlib.Path(path).name).write_text(recipe_files()[path])
        monkeypatch.setattr(package, '__path__', list(package.__path__) + [str(folder)])
        name = f'{package.__name__}.{pathlib.Path(path).stem}'
        added.append(name)
        return name

    yield _place
    for name in added:
        sys.modules.pop(name, None)


def test_the_page_has_the_three_recipes():
    assert sorted(recipe_files()) == ['mmvitreg/regularizers/feature_l2.py',
                                      'mmvitreg/regularizers/hosts/mylib.py',
                                      'mmvitreg/regularizers/stages/head_temperature.py']


def test_attention_mechanism_recipe_is_one_file(place):
    from mmvitreg.regularizers import stages
    place('mmvitreg/regularizers/stages/head_temperature.py', stages)
    try:
        assert 'head_temperature' in stages.import_all()  # what importing the package does
        torch.manual_seed(0)
        plain = MODELS.build(TINY_VIT)
        model = MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                                  head_temperature=dict(), dropkey=dict(ratio=0.2)))
        model.load_state_dict(plain.state_dict(), strict=False)
        attn = model.layers[0].attn
        assert attn.head_temperature.log_tau.shape == (2, )
        x = torch.randn(2, 3, 16, 16)
        model.eval(), plain.eval()
        assert attention_plan(attn).path == 'explicit'
        torch.testing.assert_close(model(x)[0], plain(x)[0])  # temperature 1 at the start
        with torch.no_grad():
            attn.head_temperature.log_tau.fill_(1.0)
        q, k, v = (torch.randn(1, 2, 17, 16) for _ in range(3))
        expected = F.scaled_dot_product_attention(q, k, v, scale=16**-0.5 * torch.e)
        torch.testing.assert_close(attn.scaled_dot_product_attention(q, k, v), expected)
        model.train()
        out = model(x)[0]
        (out * torch.randn_like(out)).sum().backward()  # (a plain sum of a LayerNorm is flat)
        assert attn.head_temperature.log_tau.grad.abs().sum() > 0
    finally:
        REGULARIZERS.pop('head_temperature', None)
        ATTENTION_STAGES.pop('head_temperature', None)


def test_loss_mechanism_recipe(place):
    from mmvitreg import regularizers
    importlib.import_module(place('mmvitreg/regularizers/feature_l2.py', regularizers))
    try:
        torch.manual_seed(0)
        model = MODELS.build(vit_classifier_cfg(feature_l2=dict(weight=0.1)))
        x = torch.randn(2, 3, 16, 16)
        losses = model.loss(x, cls_samples(2))
        with torch.no_grad():
            expected = 0.1 * model.backbone(x)[-1].pow(2).mean()
        torch.testing.assert_close(losses['loss_feature_l2'].detach(), expected)
        assert not model.feature_l2.tap.active and model.feature_l2.tap.output is None
        with pytest.raises(ValueError, match=r'needs a model with loss\(inputs'):
            MODELS.build(dict(TINY_VIT, type='Regularized', host='VisionTransformer',
                              feature_l2=dict()))
    finally:
        REGULARIZERS.pop('feature_l2', None)


def test_host_recipe(place):
    from mmvitreg.regularizers import hosts
    mylib = importlib.import_module(place('mmvitreg/regularizers/hosts/mylib.py', hosts))
    try:
        torch.manual_seed(0)
        host = nn.Sequential(mylib.MyAttention(), mylib.MyAttention())
        plain = copy.deepcopy(host)
        apply_regularizers(host, dropkey=dict(ratio=0.3, schedule='constant'),
                           reattention=dict(last_k=1, norm_cfg=None, transform_init='identity'))
        x = torch.randn(2, 5, 32)
        host.eval(), plain.eval()
        with torch.no_grad():
            assert torch.equal(host[0](x), plain[0](x))  # the host's own forward
            torch.testing.assert_close(host[1](x), plain[1](x))  # identity head mixing
            out, maps = attention_probs(host[0], x)
            q, k, _ = plain[0].qkv(x).reshape(2, 5, 3, 2, -1).permute(2, 0, 3, 1, 4)
            torch.testing.assert_close(maps[0], (q @ k.transpose(-2, -1) * 16**-0.5).softmax(-1))
            host.train()
            assert not torch.allclose(host[0](x), plain[0](x))
    finally:
        ATTENTION_SITES.pop(mylib.MyAttention, None)
