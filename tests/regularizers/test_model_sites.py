"""Model-level sites: loss terms added to ``model.loss`` and Monte-Carlo ``predict``."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.model import LossSite, LossTerm, MCPredictSite, add_loss_term
from mmvitreg.regularizers.site import site_of
from tests.regularizers.common import TINY_VIT


class TaskModel(nn.Module):

    def __init__(self, fail=False):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.fail = fail
        self.calls = []

    def loss(self, inputs, data_samples):
        self.calls.append('host')
        if self.fail:
            raise RuntimeError('host loss failed')
        return dict(loss_task=self.lin(inputs).mean())


class CountingTerm(LossTerm):

    def __init__(self, name, value=1.0, key=None):
        super().__init__()
        self.name, self.key = name, key or f'loss_{name}'
        self.weight = nn.Parameter(torch.tensor(value))
        self.log = []

    def start(self):
        self.log.append('start')

    def finish(self, inputs, data_samples):
        self.log.append('finish' if inputs is not None else 'abort')
        return {} if inputs is None else {self.key: self.weight * 2}


def test_loss_terms_wrap_the_host_loss_in_order():
    model = TaskModel()
    add_loss_term(model, 'extra_a', CountingTerm('a', 1.0))
    add_loss_term(model, 'extra_b', CountingTerm('b', 3.0))
    site = site_of(model, LossSite)
    assert site is not None and site.terms == ['extra_a', 'extra_b']
    losses = model.loss(torch.randn(4, 3), None)
    assert set(losses) == {'loss_task', 'loss_a', 'loss_b'}
    assert losses['loss_b'].item() == 6.0 and model.calls == ['host']
    assert model.extra_a.log == ['start', 'finish']
    # the terms are children: their parameters train and are saved with the model
    assert {'extra_a.weight', 'extra_b.weight'} <= set(model.state_dict())
    clone = pickle.loads(pickle.dumps(model))
    assert set(clone.loss(torch.randn(2, 3), None)) == {'loss_task', 'loss_a', 'loss_b'}
    assert clone.extra_a.log == ['start', 'finish', 'start', 'finish']


def test_loss_term_errors():
    with pytest.raises(ValueError, match=r'adds a loss and needs a model with loss\(inputs'):
        add_loss_term(nn.Linear(2, 2), 'extra', CountingTerm('a'))
    model = TaskModel()
    add_loss_term(model, 'extra', CountingTerm('a'))
    with pytest.raises(ValueError, match="already has a child 'extra'"):
        add_loss_term(model, 'extra', CountingTerm('b'))
    clash = TaskModel()
    add_loss_term(clash, 'extra', CountingTerm('a', key='loss_task'))
    with pytest.raises(KeyError, match=r"returns \['loss_task'\], which TaskModel.loss already"):
        clash.loss(torch.randn(2, 3), None)


def test_failing_host_loss_ends_the_terms_and_raises():
    model = TaskModel(fail=True)
    add_loss_term(model, 'extra', CountingTerm('a'))
    with pytest.raises(RuntimeError, match='host loss failed'):
        model.loss(torch.randn(2, 3), None)
    assert model.extra.log == ['start', 'abort']


def _classifier(head):
    torch.manual_seed(0)
    cfg = dict(type='Regularized', host='ImageClassifier', backbone=TINY_VIT,
               head=dict(head, num_classes=4, in_channels=32),
               dropkey=dict(ratio=0.5, schedule='constant', mc_samples=3))
    return MODELS.build(cfg)


def test_mc_predict_averages_multilabel_sigmoid_scores():
    from mmvitreg.ops.dropkey import set_dropkey_sampling
    model = _classifier(dict(type='MultiLabelLinearClsHead'))
    assert site_of(model, MCPredictSite).samples == 3
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    twin = copy.deepcopy(model)  # same DropKey mask stream (masks do not use the global RNG)
    with torch.no_grad():
        scores = torch.stack([p.pred_score for p in model.predict(x)])
        set_dropkey_sampling(twin, True)
        manual = sum(twin.head(twin.extract_feat(x)).sigmoid() for _ in range(3)) / 3
        set_dropkey_sampling(twin, False)
    assert torch.allclose(scores, manual, atol=1e-5)  # mean of sigmoids, not of logits
    assert not torch.allclose(scores.sum(1), torch.ones(2))


def test_mc_predict_is_plain_in_training_and_needs_a_known_head():
    model = _classifier(dict(type='LinearClsHead'))
    model.train()
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16)
    a = torch.stack([p.pred_score for p in model.predict(x)])
    b = twin.head(twin.extract_feat(x)).softmax(1)
    assert torch.allclose(a, b, atol=1e-6)  # one (training-mode) pass, not an average

    class OddHead(nn.Module):
        pass

    with pytest.raises(ValueError, match='needs an mmpretrain ClsHead or MultiLabelClsHead'):
        MCPredictSite.inverse_activation(OddHead())
