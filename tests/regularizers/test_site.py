"""Sites: routing one method of one host instance; regularized models stay ordinary objects
(pickled into a fresh process, deep-copied, wrapped by mmengine's EMA)."""
import copy
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import mmvitreg  # noqa: F401
from mmvitreg.ops.dropkey import dropkey_modules, set_dropkey_enabled
from mmvitreg.registry import MODELS
from mmvitreg.regularizers.site import Site, site_of
from tests._helpers import REPO
from tests.regularizers.common import cls_samples, routed_sites, vit_classifier_cfg


# ----------------------------------------------------------------------------- toy hosts
class Greeter(nn.Module):

    def __init__(self):
        super().__init__()
        self.offset = 1
        self.slot = _add_ten  # a routing attribute set per instance (like mmpretrain's SDPA)

    def greet(self, x):
        return x + self.offset

    def forward(self, x):
        return self.slot(self.greet(x))


def _add_ten(x):
    return x + 10


class Doubling(Site):
    method = 'greet'

    def __call__(self, x):
        return 2 * self.original(x)


class Negating(Site):
    method = 'greet'

    def __call__(self, x):
        return -self.original(x)


class SlotSite(Site):
    method = 'slot'

    def __call__(self, x):
        return self.original(x) * 100


def test_site_routes_one_instance_and_is_removable():
    host, other = Greeter(), Greeter()
    site = Doubling.install(host)
    assert host.greet(3) == 8 and other.greet(3) == 4  # only this instance, class untouched
    assert type(host) is Greeter and 'greet' in vars(host) and 'greet' not in vars(other)
    assert Doubling.install(host) is site and site_of(host, Doubling) is site
    assert site_of(other, Doubling) is None and site_of(host, Negating) is None
    assert repr(site) == 'Doubling(Greeter.greet)'
    with pytest.raises(TypeError, match='already routed by Doubling, not Negating'):
        Negating.install(host)
    host.offset = 5  # the site calls the class's method on the live host
    assert host.greet(1) == 12
    site.remove()
    assert host.greet(1) == 6 and 'greet' not in vars(host)


def test_site_on_an_instance_attribute_keeps_and_restores_it():
    host = Greeter()
    site = SlotSite.install(host)
    assert host(0) == (0 + 1 + 10) * 100  # forward -> self.slot -> site -> saved _add_ten
    site.remove()
    assert host.slot is _add_ten and host(0) == 11


def test_pickle_and_deepcopy_keep_routing_to_the_new_object():
    host = Greeter()
    Doubling.install(host)
    SlotSite.install(host)
    for clone in (pickle.loads(pickle.dumps(host)), copy.deepcopy(host)):
        assert clone.greet(3) == 8 and clone(0) == (2 * 1 + 10) * 100
        assert site_of(clone, Doubling).host is clone  # not the original
        clone.offset = 0
        assert clone.greet(3) == 6 and host.greet(3) == 8


# --------------------------------------------------------------- regularized models
def _full_classifier():
    """ViT classifier with every mechanism: DropKey (MC predict), Re-attention, DRLoc."""
    torch.manual_seed(0)
    return MODELS.build(vit_classifier_cfg(
        dropkey=dict(ratio=0.3, schedule='constant', mc_samples=2),
        reattention=dict(last_k=1), drloc=dict(num_pairs=4)))


def _assert_sites_belong_to(model):
    sites = list(routed_sites(model))
    kinds = {type(s).__name__ for _, _, s in sites}
    assert {'LossSite', 'MCPredictSite', 'PretrainAttentionSite'} <= kinds, kinds
    for name, module, site in sites:
        assert site.host is module, f'site of {name!r} routes to another object'


def test_only_sites_and_mechanism_children_are_added_to_hosts():
    torch.manual_seed(0)
    plain = MODELS.build(vit_classifier_cfg())
    model = _full_classifier()
    plain_modules = dict(plain.named_modules())
    for name, mod in model.named_modules():
        if name not in plain_modules:
            assert name.split('.')[-1] in ('dropkey', 'reattention', 'drloc_head') or \
                name.startswith('drloc_head.') or '.reattention.' in name, name
            continue
        assert type(mod) is type(plain_modules[name])
        for key in set(vars(mod)) - set(vars(plain_modules[name])):  # only sites are added,
            value = vars(mod)[key]  # each under the name of the method it routes
            assert isinstance(value, Site) and key == value.method, (name, key)


def test_deepcopy_gives_an_independent_model():
    model = _full_classifier()
    clone = copy.deepcopy(model)
    _assert_sites_belong_to(clone)
    x = torch.randn(2, 3, 16, 16)
    model.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(x, mode='tensor'), model(x, mode='tensor'))
    # switching the copy's DropKey off does not touch the original
    set_dropkey_enabled(clone, False)
    assert all(m.enabled for m in dropkey_modules(model))
    model.train(), clone.train()
    with torch.no_grad():
        torch.manual_seed(0)
        drop = model(x, mode='tensor')
        set_dropkey_enabled(model, False)
        no_drop = model(x, mode='tensor')
        set_dropkey_enabled(model, True)
        assert not torch.allclose(drop, no_drop, atol=1e-5)
        assert torch.equal(clone(x, mode='tensor'), no_drop)
    # the copy's DRLoc loss taps the copy's features and trains the copy's heads only
    losses = clone.loss(x, cls_samples(2))
    assert set(losses) == {'loss', 'loss_drloc'}
    losses['loss_drloc'].backward()
    assert all(p.grad is not None for p in clone.drloc_head.parameters())
    assert all(p.grad is None for p in model.drloc_head.parameters())
    assert clone.backbone.layers[0].attn.qkv.weight.grad is not None
    assert model.backbone.layers[0].attn.qkv.weight.grad is None


def test_mmengine_ema_wrapper_builds_updates_and_runs():
    from mmengine.model import ExponentialMovingAverage
    model = _full_classifier()
    ema = ExponentialMovingAverage(model, momentum=0.5)
    _assert_sites_belong_to(ema.module)
    ema.update_parameters(model)  # mmengine's first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    w_model = model.backbone.layers[1].attn.reattention.reatten_matrix.weight
    w_ema = ema.module.backbone.layers[1].attn.reattention.reatten_matrix.weight
    assert torch.allclose(w_ema, w_model - 0.5)  # halfway between the old and new weights
    x = torch.randn(2, 3, 16, 16)
    ema.eval()
    with torch.no_grad():
        out = ema(x, mode='tensor')
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        assert not torch.allclose(out, model.eval()(x, mode='tensor'))  # its own weights
        preds = ema.module.predict(x)  # Monte-Carlo predict of the averaged model
    assert torch.allclose(torch.stack([p.pred_score for p in preds]).sum(1), torch.ones(2),
                          atol=1e-5)
    ema.train()
    assert 'loss_drloc' in ema(x, cls_samples(2), mode='loss')


FRESH_PROCESS_CHECK = textwrap.dedent('''
    import sys
    import torch
    import mmvitreg
    from mmpretrain.structures import DataSample
    from mmvitreg.ops.dropkey import dropkey_modules, set_dropkey_enabled
    from mmvitreg.regularizers.site import Site

    model = torch.load(sys.argv[1], weights_only=False)
    ref = torch.load(sys.argv[2])
    x = ref['x']
    for name, mod in model.named_modules():
        for value in vars(mod).values():
            if isinstance(value, Site):
                assert value.host is mod, name
    assert type(model).__name__ == 'ImageClassifier', type(model)
    assert len(dropkey_modules(model)) == 2
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), ref['tensor']), 'eval output changed'
        preds = model.predict(x)  # Monte-Carlo averaging (mc_samples=2)
        scores = torch.stack([p.pred_score for p in preds])
        assert torch.allclose(scores.sum(1), torch.ones(2), atol=1e-5)
        assert not torch.allclose(scores, ref['tensor'].softmax(1), atol=1e-4), 'no MC'
        model.train()
        torch.manual_seed(0)
        drop = model(x, mode='tensor')
        set_dropkey_enabled(model, False)
        plain = model(x, mode='tensor')
        set_dropkey_enabled(model, True)
        assert not torch.allclose(drop, plain, atol=1e-5), 'DropKey inactive in training'
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = model.loss(x, samples)
    assert set(losses) == {'loss', 'loss_drloc'}, losses
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.drloc_head.parameters())
    assert model.backbone.layers[1].attn.reattention.reatten_matrix.weight.grad is not None
    print('fresh process OK')
''')


def test_saved_model_loads_and_regularizes_in_a_fresh_process(tmp_path):
    """``torch.save(model)`` here, ``torch.load`` after a plain ``import mmvitreg`` elsewhere."""
    model = _full_classifier()
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x, mode='tensor')
    torch.save(model, tmp_path / 'model.pth')
    torch.save(dict(x=x, tensor=ref), tmp_path / 'ref.pth')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(
        [sys.executable, '-c', FRESH_PROCESS_CHECK, str(tmp_path / 'model.pth'),
         str(tmp_path / 'ref.pth')], cwd=str(tmp_path), env=env, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'fresh process OK' in proc.stdout
