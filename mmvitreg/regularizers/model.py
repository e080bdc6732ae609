"""Model-level sites: adding loss terms to a host's ``loss`` and averaging its ``predict``.

* :class:`LossSite` routes ``model.loss(inputs, data_samples)`` (mmpretrain classifiers, mmdet
  detectors, QPIC; mmengine's ``forward(mode='loss')`` calls it too). Loss mechanisms are child
  modules of the model implementing :class:`LossTerm`; the site starts each term, runs the host's
  own ``loss`` and adds the terms' losses to its dict.
* :class:`FeatureTap` routes a sub-module's ``forward`` to keep its output while a loss term
  captures (during the host's ``loss`` only): features reach a loss term without a second pass
  and without forward hooks.
* :class:`MCPredictSite` routes ``model.predict`` of an mmpretrain classifier to average the
  class scores of several stochastic passes (DropKey Monte-Carlo test-time averaging).
"""
from typing import Dict, List

import torch
import torch.nn as nn
from torch import Tensor

from mmvitreg.ops.dropkey import set_dropkey_sampling
from .site import Site

__all__ = ['LossTerm', 'LossSite', 'add_loss_term', 'FeatureTap', 'MCPredictSite']


class LossTerm(nn.Module):
    """A child module of a host model that contributes losses to ``model.loss``.

    ``start()`` is called before the host computes its losses (e.g. to begin capturing
    features), ``finish(inputs, data_samples)`` after it, returning ``{name: loss}``;
    ``finish`` must also end whatever ``start`` began.
    """

    def start(self) -> None:
        pass

    def finish(self, inputs, data_samples) -> Dict[str, Tensor]:
        raise NotImplementedError


class LossSite(Site):
    method = 'loss'

    def __init__(self, host: nn.Module) -> None:
        super().__init__(host)
        self.terms: List[str] = []  # child names of the host, in the order they were added

    def __call__(self, inputs, data_samples, *args, **kwargs):
        terms = [self.host._modules[name] for name in self.terms]
        for term in terms:
            term.start()
        try:
            losses = self.original(inputs, data_samples, *args, **kwargs)
        except BaseException:
            for term in terms:
                term.finish(None, None)
            raise
        for term in terms:
            extra = term.finish(inputs, data_samples)
            clash = sorted(set(extra) & set(losses))
            if clash:
                raise KeyError(f'loss term {type(term).__name__} returns {clash}, which '
                               f'{type(self.host).__name__}.loss already returns')
            losses.update(extra)
        return losses


def add_loss_term(model: nn.Module, name: str, term: LossTerm) -> None:
    """Add ``term`` to ``model`` as child ``name`` and to its loss site: the one place where a
    loss mechanism's module is added to a host."""
    if not callable(getattr(model, 'loss', None)):
        raise ValueError(f'{type(term).__name__} adds a loss and needs a model with '
                         f"loss(inputs, data_samples) (e.g. host='ImageClassifier' or a "
                         f'detector), got {type(model).__name__}')
    if name in model._modules:
        raise ValueError(f'{type(model).__name__} already has a child {name!r}; a loss '
                         'regularizer can be attached once')
    param = next(model.parameters(), None)
    model.add_module(name, term.to(param.device) if param is not None else term)
    LossSite.install(model).terms.append(name)


class FeatureTap(Site):
    """Site on a sub-module's ``forward`` keeping its first output between :meth:`start` and
    :meth:`take` (a loss term's ``start``/``finish``); otherwise the module runs untouched.
    One capturing term per module."""

    method = 'forward'

    def __init__(self, host: nn.Module) -> None:
        super().__init__(host)
        self.active = False
        self.output = None

    def __call__(self, *args, **kwargs):
        output = self.original(*args, **kwargs)
        if self.active and self.output is None:
            self.output = output
        return output

    def start(self) -> None:
        self.active, self.output = True, None

    def take(self):
        """The captured output (None if the module did not run); stops capturing."""
        output, self.output, self.active = self.output, None, False
        return output


class MCPredictSite(Site):
    """``predict`` averaging the class scores of ``samples`` stochastic passes.

    Each pass runs the host's own ``predict`` with DropKey sampling forced on (so each pass draws
    new masks) and yields the head's scores after its own activation (softmax for ``ClsHead``,
    sigmoid for ``MultiLabelClsHead``); the mean score goes back through the head's prediction
    logic (the inverse activation is a fixed point), so labels, thresholds and top-k follow the
    head. In training mode the host's ``predict`` runs unchanged.
    """

    method = 'predict'

    def __init__(self, host: nn.Module, samples: int = 1) -> None:
        super().__init__(host)
        self.samples = samples

    @staticmethod
    def inverse_activation(head: nn.Module):
        """``log`` for softmax heads, ``logit`` for sigmoid (multi-label) heads."""
        from mmpretrain.models.heads import ClsHead, MultiLabelClsHead
        if isinstance(head, MultiLabelClsHead):
            return lambda p: torch.logit(p.clamp(1e-7, 1 - 1e-7))
        if isinstance(head, ClsHead):
            return lambda p: p.clamp_min(1e-30).log()
        raise ValueError(f'DropKey mc_samples needs an mmpretrain ClsHead or MultiLabelClsHead '
                         f'(their activation is known), got {type(head).__name__}')

    def __call__(self, inputs, data_samples=None, **kwargs):
        if self.samples <= 1 or self.host.training:
            return self.original(inputs, data_samples, **kwargs)
        head = self.host.head
        inverse = self.inverse_activation(head)
        set_dropkey_sampling(self.host, True)
        try:
            total = None
            for _ in range(self.samples):
                passes = self.original(inputs, None, **kwargs)
                scores = torch.stack([s.pred_score for s in passes]).float()
                total = scores if total is None else total + scores
        finally:
            set_dropkey_sampling(self.host, False)
        return head._get_predictions(inverse(total / self.samples), data_samples)

