"""Version-safe attention sites: every supported attention host reproduces its own forward.

For each host class (mmpretrain, mmcv and timm attention in their variants, mmvitreg's own
attention modules) the test attaches DropKey through the ``dropkey`` key and checks that

* in eval the module's output is *bit-identical* to the host's own forward (sites step aside),
* in training with DropKey ratio 0 and no dropout it matches the host's training forward,
* with the site's own code path forced on (attention-map recording, and an identity
  Re-attention head transform that makes the site compute the attention step itself) the output
  equals the host's forward to float tolerance, so the site's copy of the host's q/k/v, masks,
  norms and projections is right for the installed library version,
* with ratio > 0 in training the output changes and gradients stay finite.
"""
import copy
import inspect

import pytest
import torch
import torch.nn as nn

import mmvitreg  # noqa: F401  (registers the OpenMMLab sites)
from mmvitreg.regularizers.attention import (attention_probs, attention_site_class,
                                             find_attention_modules)
from mmvitreg.regularizers.dropkey import attach_dropkey
from mmvitreg.regularizers.reattention import attach_reattention

B = 2


def _mmpretrain(**kwargs):
    from mmpretrain.models.utils.attention import MultiheadAttention
    dims = kwargs.pop('input_dims', None)
    mod = MultiheadAttention(32, kwargs.pop('num_heads', 2), input_dims=dims, **kwargs)
    return mod, (torch.randn(B, 10, dims or 32), ), {}


def _mmcv(batch_first, masks):
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    mod = MultiheadAttention(32, 2, batch_first=batch_first)
    nq, nk = 6, 10

    def seq(n):
        return torch.randn(B, n, 32) if batch_first else torch.randn(n, B, 32)

    query, key = seq(nq), seq(nk)
    kwargs = dict(key=key, value=key, query_pos=seq(nq), key_pos=seq(nk))
    if 'kpm' in masks:
        kpm = torch.zeros(B, nk, dtype=torch.bool)
        kpm[1, 7:] = True  # second sequence padded
        kwargs['key_padding_mask'] = kpm
    if 'bool' in masks:
        blocked = torch.rand(nq, nk) > 0.6
        blocked[:, 0] = False  # every query keeps a key
        kwargs['attn_mask'] = blocked
    if 'float' in masks:
        kwargs['attn_mask'] = torch.randn(nq, nk)
    return mod, (query, ), kwargs


def _mmcv_self(batch_first):
    """Self-attention call as in DETR encoders: key/value default to the query."""
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    mod = MultiheadAttention(32, 2, batch_first=batch_first)
    q = torch.randn(B, 9, 32) if batch_first else torch.randn(9, B, 32)
    return mod, (q, ), dict(query_pos=torch.randn_like(q))


def _timm(mask=False, **kwargs):
    from timm.models.vision_transformer import Attention
    if kwargs.get('qk_norm') or kwargs.get('scale_norm'):
        kwargs['norm_layer'] = nn.LayerNorm
    mod = Attention(32, num_heads=2, qkv_bias=True, **kwargs)
    x = torch.randn(B, 10, 32)
    if mask:
        allowed = torch.rand(10, 10) > 0.4
        allowed[:, 0] = True
        return mod, (x, ), dict(attn_mask=allowed)
    return mod, (x, ), {}


def _timm_option(name):
    from timm.models.vision_transformer import Attention
    return name in inspect.signature(Attention.__init__).parameters


def _plain_vit(rel_pos):
    from mmvitreg.models.backbones.plain_vit import PlainViTAttention
    mod = PlainViTAttention(32, 2, use_rel_pos=rel_pos, rel_pos_size=(3, 4) if rel_pos else None)
    return mod, (torch.randn(B, 3, 4, 32), ), {}


def _himhsa():
    from mmvitreg.models.layers.dhvt_layers import HIMHSA
    return HIMHSA(16, 4), (torch.randn(B, 1 + 2 * 3, 16), (2, 3)), {}


def _reattention():
    from mmvitreg.models.layers.reattention import ReAttention
    return ReAttention(32, 2), (torch.randn(B, 10, 32), ), {}


HOSTS = {
    'mmpretrain': lambda: _mmpretrain(),
    'mmpretrain-qk_scale': lambda: _mmpretrain(qk_scale=0.1),  # mmpretrain's python SDPA
    'mmpretrain-v_shortcut': lambda: _mmpretrain(num_heads=1, input_dims=16, v_shortcut=True),
    'mmpretrain-layer_scale': lambda: _mmpretrain(layer_scale_init_value=0.5),
    'mmcv-batch_first-self': lambda: _mmcv_self(True),
    'mmcv-seq_first-self': lambda: _mmcv_self(False),
    'mmcv-batch_first-cross-kpm': lambda: _mmcv(True, ('kpm', )),
    'mmcv-seq_first-cross-kpm-bool_mask': lambda: _mmcv(False, ('kpm', 'bool')),
    'mmcv-batch_first-cross-kpm-float_mask': lambda: _mmcv(True, ('kpm', 'float')),
    'timm': lambda: _timm(),
    'timm-attn_mask': lambda: _timm(mask=True),
    'timm-qk_norm': lambda: _timm(qk_norm=True),
    'timm-scale_norm': lambda: _timm(scale_norm=True),
    'timm-gated': lambda: _timm(gated=True),
    'plainvit': lambda: _plain_vit(False),
    'plainvit-rel_pos': lambda: _plain_vit(True),
    'himhsa': _himhsa,
    'reattention': _reattention,
}
OPTIONAL = {'timm-scale_norm': 'scale_norm', 'timm-gated': 'gated'}


def _build(key, seed=0):
    if key in OPTIONAL and not _timm_option(OPTIONAL[key]):
        pytest.skip(f'the installed timm Attention has no {OPTIONAL[key]!r} option')
    torch.manual_seed(seed)
    host, args, kwargs = HOSTS[key]()
    with torch.no_grad():  # non-trivial norms / layer scales so that a skipped step shows
        for name, p in host.named_parameters():
            if 'norm' in name or 'gamma' in name:
                p.add_(torch.rand_like(p) - 0.5)
    return host, args, kwargs


def _run(module, args, kwargs, train):
    module.train(train)
    out = module(*args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _with_dropkey(host, **cfg):
    model = copy.deepcopy(host)
    rows = attach_dropkey(model, dict(dict(ratio=0.5, schedule='constant'), **cfg))
    assert len(rows) == 1 and hasattr(model, 'dropkey')
    return model



@pytest.mark.parametrize(
    'key', [k
            for k in sorted(HOSTS)])
def test_site_reproduces_host_forward(key):
    host, args, kwargs = _build(key)
    assert attention_site_class(host) is not None, f'{type(host).__name__} has no site'
    model = _with_dropkey(host)
    assert list(model.state_dict()) == list(host.state_dict())  # DropKey has no state
    with torch.no_grad():
        ref = _run(host, args, kwargs, train=False)
        # eval: the host's own forward, bit for bit
        assert torch.equal(_run(model, args, kwargs, train=False), ref)
        # the site's own code path (it computes q/k/v, masks, softmax, projections itself)
        out, maps = attention_probs(model.eval(), *args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
        assert maps and all(torch.isfinite(m).all() for m in maps)
        assert torch.allclose(maps[0].sum(-1), torch.ones_like(maps[0][..., 0]), atol=1e-5)
        # the recording was temporary only for hosts without an installed site: the site
        # installed by DropKey stays, and the eval output is still the host's own
        assert torch.equal(_run(model, args, kwargs, train=False), ref)

        # ratio 0 in training with no dropout: the host's training forward
        zero = _with_dropkey(host, ratio=0.0)
        assert torch.allclose(_run(zero, args, kwargs, train=True),
                              _run(host, args, kwargs, train=True), atol=1e-6)
        # an identity head transform routes every call through the site's attention step
        if key != 'reattention':
            mixed = copy.deepcopy(zero)
            attach_reattention(mixed, dict(transform_init='identity', norm_cfg=None))
            assert torch.allclose(_run(mixed, args, kwargs, train=False), ref, atol=1e-5,
                                  rtol=1e-4)
            assert torch.allclose(_run(mixed, args, kwargs, train=True),
                                  _run(host, args, kwargs, train=True), atol=1e-5, rtol=1e-4)

    # DropKey active in training: different, finite outputs and gradients
    torch.manual_seed(1)
    out = _run(model, args, kwargs, train=True)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        assert not torch.allclose(out, _run(host, args, kwargs, train=True), atol=1e-5)
    out.float().square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads
                         if g is not None)


@pytest.mark.parametrize('key', ['plainvit', 'plainvit-rel_pos', 'himhsa'])
def test_grid_hosts_take_block_and_cross_variants(key):
    host, args, kwargs = _build(key)
    for variant in ('block', 'cross'):
        model = _with_dropkey(host, variant=variant, block_size=2)
        with torch.no_grad():
            assert torch.equal(_run(model, args, kwargs, train=False),
                               _run(host, args, kwargs, train=False))
            torch.manual_seed(0)
            out = _run(model, args, kwargs, train=True)
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, _run(host, args, kwargs, train=True), atol=1e-5)


def test_timm_models_of_the_installed_version_are_found():
    """The timm site covers the attention class timm's own ViTs use (all accepted versions
    define it in ``timm.models.vision_transformer``)."""
    timm = pytest.importorskip('timm')
    model = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32,
                              patch_size=8, depth=3, num_classes=0)
    found = find_attention_modules(model)
    assert [n for n, _ in found] == [f'blocks.{i}.attn' for i in range(3)]
    plain = copy.deepcopy(model).eval()
    attach_dropkey(model, dict(ratio=0.2))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain(x))
    # num_prefix_tokens (the class token) + a 4x4 grid: block DropKey trains on timm ViTs
    block = copy.deepcopy(plain)
    attach_dropkey(block, dict(ratio=0.2, variant='block', block_size=2))
    block.train()
    assert torch.isfinite(block(x)).all()


def test_timm_forward_without_mask_arguments():
    """timm < 1.0.10 defines ``Attention.forward(self, x)`` (no ``attn_mask``/``is_causal``):
    while DropKey is inactive the site must call such a forward with ``x`` alone."""
    from timm.models.vision_transformer import Attention

    class OldAttention(Attention):

        def forward(self, x):  # the signature of older timm versions
            return super().forward(x)

    torch.manual_seed(0)
    host = OldAttention(32, num_heads=2)
    model = _with_dropkey(host)
    x = torch.randn(B, 10, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), host.eval()(x))
        model.train()
        assert torch.isfinite(model(x)).all()
