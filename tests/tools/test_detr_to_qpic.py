"""Official DETR checkpoint -> mmvitreg QPIC (tools/model_converters/detr_to_qpic.py).

``_OfficialDETR`` is a compact test-only re-statement of the official module *names*
(facebookresearch/detr ``models/detr.py``, ``transformer.py``, ``backbone.py``: torchvision
ResNet-50 body with FrozenBatchNorm2d buffers, post-norm transformer, ``class_embed`` over 91
COCO ids + no-object, 3-layer ``bbox_embed`` MLP), used to write a randomly initialised
checkpoint in the official on-disk layout.
"""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torchvision

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'detr_to_qpic', osp.join(REPO, 'tools/model_converters/detr_to_qpic.py'))
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

# the official `obj_ids` of hitachi-rd-cv/qpic convert_parameters.py (COCO ids of HICO objects)
OFFICIAL_OBJ_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                    24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46,
                    47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
                    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89,
                    90, 91]


class _EncLayer(nn.Module):

    def __init__(self, d=256, ff=2048, heads=8):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)


class _DecLayer(_EncLayer):

    def __init__(self, d=256, ff=2048, heads=8):
        super().__init__(d, ff, heads)
        self.multihead_attn = nn.MultiheadAttention(d, heads)
        self.norm3 = nn.LayerNorm(d)


class _MLP(nn.Module):

    def __init__(self, d=256):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 4)])


def official_detr_state_dict(seed=0):
    """Random weights under the official DETR-R50 key names (as in detr-r50-e632da11.pth)."""
    torch.manual_seed(seed)
    body = torchvision.models.resnet50()
    state = {f'backbone.0.body.{k}': v for k, v in body.state_dict().items()
             if not k.startswith('fc.') and not k.endswith('num_batches_tracked')}
    enc = nn.ModuleList([_EncLayer() for _ in range(6)])
    dec = nn.ModuleList([_DecLayer() for _ in range(6)])
    state.update({f'transformer.encoder.layers.{k}': v for k, v in enc.state_dict().items()})
    state.update({f'transformer.decoder.layers.{k}': v for k, v in dec.state_dict().items()})
    state.update({f'transformer.decoder.norm.{k}': v
                  for k, v in nn.LayerNorm(256).state_dict().items()})
    state.update({f'class_embed.{k}': v for k, v in nn.Linear(256, 92).state_dict().items()})
    state.update({f'bbox_embed.{k}': v for k, v in _MLP().state_dict().items()})
    state['query_embed.weight'] = torch.randn(100, 256)
    state.update({f'input_proj.{k}': v
                  for k, v in nn.Conv2d(2048, 256, 1).state_dict().items()})
    # every tensor distinct and non-trivial (BN statistics positive), so a swap would show
    return {k: (torch.rand_like(v.float()) + 0.5 if 'running_var' in k else
                torch.randn_like(v.float())) for k, v in state.items()}


@pytest.fixture(scope='module')
def qpic_r50():
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, 'configs/qpic/qpic_r50_8xb2-150e_hico.py'))
    cfg.model.backbone.init_cfg = None  # structure only: no download
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def test_object_rows_are_the_official_ones():
    assert conv.coco80_rows() == OFFICIAL_OBJ_IDS


def test_converted_official_checkpoint_loads_strictly_with_mapped_tensors(qpic_r50, tmp_path):
    official = official_detr_state_dict()
    src, dst = tmp_path / 'detr-r50.pth', tmp_path / 'qpic.pth'
    torch.save({'model': official}, src)  # the official file layout
    conv.main([str(src), str(dst)])
    converted = torch.load(dst, map_location='cpu', weights_only=False)['state_dict']

    model = qpic_r50
    own = model.state_dict()
    verb = {k for k in own if k.startswith('bbox_head.fc_verb_cls.')}
    assert set(own) - set(converted) == verb  # only the verb classifier starts from scratch
    # strict load: every converted key exists with its shape, no key is left over
    model.load_state_dict({**converted, **{k: own[k] for k in verb}}, strict=True)
    got = model.state_dict()

    def same(ours, theirs):
        assert torch.equal(got[ours], official[theirs]), (ours, theirs)

    same('backbone.conv1.weight', 'backbone.0.body.conv1.weight')
    same('backbone.layer3.5.bn2.running_var', 'backbone.0.body.layer3.5.bn2.running_var')
    same('backbone.layer4.0.downsample.1.weight', 'backbone.0.body.layer4.0.downsample.1.weight')
    same('neck.convs.0.conv.weight', 'input_proj.weight')
    same('query_embedding.weight', 'query_embed.weight')
    for i in (0, 5):
        enc, dec = f'transformer.encoder.layers.{i}', f'transformer.decoder.layers.{i}'
        same(f'encoder.layers.{i}.self_attn.attn.in_proj_weight', f'{enc}.self_attn.in_proj_weight')
        same(f'encoder.layers.{i}.self_attn.attn.out_proj.bias', f'{enc}.self_attn.out_proj.bias')
        same(f'encoder.layers.{i}.ffn.layers.0.0.weight', f'{enc}.linear1.weight')
        same(f'encoder.layers.{i}.ffn.layers.1.bias', f'{enc}.linear2.bias')
        same(f'encoder.layers.{i}.norms.0.weight', f'{enc}.norm1.weight')
        same(f'encoder.layers.{i}.norms.1.bias', f'{enc}.norm2.bias')
        same(f'decoder.layers.{i}.self_attn.attn.in_proj_bias', f'{dec}.self_attn.in_proj_bias')
        same(f'decoder.layers.{i}.cross_attn.attn.in_proj_weight',
             f'{dec}.multihead_attn.in_proj_weight')
        same(f'decoder.layers.{i}.norms.2.weight', f'{dec}.norm3.weight')
        same(f'decoder.layers.{i}.ffn.layers.1.weight', f'{dec}.linear2.weight')
    same('decoder.post_norm.weight', 'transformer.decoder.norm.weight')
    # object classifier: the official rows (80 COCO objects in label order, then no-object)
    for name in ('weight', 'bias'):
        assert torch.equal(got[f'bbox_head.fc_obj_cls.{name}'],
                           official[f'class_embed.{name}'][OFFICIAL_OBJ_IDS])
    assert torch.equal(got['bbox_head.fc_obj_cls.bias'][80], official['class_embed.bias'][91])
    assert torch.equal(got['bbox_head.fc_obj_cls.weight'][0], official['class_embed.weight'][1])
    # box MLP copied to subject and object heads
    for who in ('sub', 'obj'):
        same(f'bbox_head.{who}_reg_ffn.layers.0.0.weight', 'bbox_embed.layers.0.weight')
        same(f'bbox_head.{who}_reg_ffn.layers.1.bias', 'bbox_embed.layers.1.bias')
        same(f'bbox_head.{who}_fc_reg.weight', 'bbox_embed.layers.2.weight')
    assert got['bbox_head.sub_fc_reg.weight'].data_ptr() != \
        got['bbox_head.obj_fc_reg.weight'].data_ptr()


def test_ddp_prefix_and_bad_checkpoints(tmp_path, capsys):
    official = official_detr_state_dict(seed=1)
    plain = conv.convert_detr_to_qpic(official)
    prefixed = conv.convert_detr_to_qpic({f'module.{k}': v for k, v in official.items()})
    assert list(plain) == list(prefixed)
    with pytest.raises(KeyError, match='unknown keys'):
        conv.convert_detr_to_qpic({**official, 'bbox_attention.q_linear.weight': torch.zeros(1)})
    no_box = {k: v for k, v in official.items() if not k.startswith('bbox_embed.layers.2')}
    with pytest.raises(KeyError, match='missing keys'):
        conv.convert_detr_to_qpic(no_box)
    short = {**official, 'class_embed.weight': torch.zeros(81, 256),
             'class_embed.bias': torch.zeros(81)}
    with pytest.raises(ValueError, match='class_embed.weight has 81 rows'):
        conv.convert_detr_to_qpic(short)
    with pytest.raises(SystemExit):
        conv.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')])
    assert 'error:' in capsys.readouterr().err
