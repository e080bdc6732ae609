"""DRLoc reaches its features and the token grid through ``FeatureTap`` sites (no forward hooks):
the routing is visible on the instances, pickles with the model, and is removable."""
import copy
import pickle

import torch

import mmvitreg  # noqa: F401
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.model import FeatureTap
from mmvitreg.regularizers.site import site_of
from tests.regularizers.common import cls_samples, vit_classifier_cfg


def _model(**drloc):
    torch.manual_seed(0)
    return MODELS.build(vit_classifier_cfg(drloc=dict(num_pairs=4, **drloc)))


def test_sources_and_grid_source_are_sites_not_hooks():
    model = _model()
    term = model.drloc_head
    assert list(term.taps) == ['backbone.ln1', 'backbone.patch_embed']
    for path, tap in term.taps.items():
        module = model.get_submodule(path)
        assert site_of(module, FeatureTap) is tap and tap.host is module
        assert not module._forward_hooks
    x = torch.randn(2, 3, 16, 24)  # 4x6 grid: only the grid source's (H, W) tells it
    assert torch.isfinite(model.loss(x, cls_samples(2))['loss_drloc'])
    clone = pickle.loads(pickle.dumps(model))  # the routing travels with the model
    assert site_of(clone.backbone.patch_embed, FeatureTap) is clone.drloc_head.taps[
        'backbone.patch_embed']
    assert torch.isfinite(clone.loss(x, cls_samples(2))['loss_drloc'])
    # removing a site gives the module its own forward back
    deep = copy.deepcopy(model)
    for tap in deep.drloc_head.taps.values():
        tap.remove()
    assert 'forward' not in vars(deep.backbone.ln1)
    assert not any(isinstance(v, FeatureTap) for m in deep.modules() for v in vars(m).values())


def test_a_source_that_is_also_the_grid_source_is_captured_once():
    model = _model(source='backbone.patch_embed', in_channels=32)
    assert list(model.drloc_head.taps) == ['backbone.patch_embed']
    losses = model.loss(torch.randn(2, 3, 16, 24), cls_samples(2))
    assert torch.isfinite(losses['loss_drloc']) and losses['loss_drloc'] > 0


def test_the_head_type_comes_from_the_registry():
    from mmvitreg.models.heads import DRLocHead

    @MODELS.register_module(force=True)
    class CountingDRLocHead(DRLocHead):
        built = 0

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            CountingDRLocHead.built += 1

    try:
        model = _model(type='CountingDRLocHead', all_layers=True)
    finally:
        for registry in MODELS.targets:
            registry._module_dict.pop('CountingDRLocHead')
    assert CountingDRLocHead.built == 2
    assert all(isinstance(h, CountingDRLocHead) for h in model.drloc_head)
