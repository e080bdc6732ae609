"""Pairing by seed: a variant that adds modules initialises its host exactly as the baseline.

Each test builds the baseline and the variant run configs of a benchmark preset
(``build_run_config``, as the benchmark does), builds them with mmengine's ``Runner`` (which
seeds from ``randomness.seed`` before building the model) and initialises the weights as
``Runner.train`` does; every state-dict entry of the baseline must then be bit-identical in the
variant, and the global torch generator must be where the baseline's is (the training stream,
data order included, starts the same).

DHVT against ViT (``digits_regularizers.py``'s ``dhvt``) is not tested: DHVT replaces the whole
backbone, so its tensors are other modules even where a name and shape coincide
(``backbone.layers.0.attn.qkv.weight``), and the one part both models share, the classification
head, is initialised to constants (no random numbers). That comparison is paired by seed (data
order, augmentation) only, not by initial weights.
"""
import copy
import os.path as osp
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from mmengine.registry import MODELS

from mmvitreg.benchmark import build_run_config, load_spec
from mmvitreg.regularizers import apply_regularizers
from tests._helpers import REPO
from tests.regularizers.common import TINY_VIT, vit_classifier_cfg

PRESETS = osp.join(REPO, 'configs', 'benchmark')
# the digit-pretrained backbones (a ~90 s pretraining on first use) load without random draws:
# left out, every backbone tensor is drawn, which only makes the comparison stricter
NO_PRETRAINING = {'model.backbone.init_cfg': None}
# DeepViT-32 / ViT-32 shrunk to 13 blocks of width 24 (attention_cosine's component 12 needs 13)
TINY_DEEPVIT = {'model.backbone.arch': dict(_delete_=True, embed_dims=24, num_layers=13,
                                            num_heads=2, feedforward_channels=48),
                'model.backbone.img_size': 32, 'model.head.in_channels': 24}


def initialised(preset: str, variant: str, seed: int, work_dir: str,
                options: dict = None) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """The state dict of a benchmark run's model after the runner built and initialised it,
    and the global torch generator state then."""
    from mmengine.runner import Runner
    spec = load_spec(osp.join(PRESETS, preset))
    cfg = build_run_config(spec, spec.variant(variant), seed, extra_options=options)
    cfg.work_dir = osp.join(work_dir, f'{variant}_{seed}')
    runner = Runner.from_cfg(cfg)  # seeds (randomness.seed), then builds the model
    runner._init_model_weights()  # what Runner.train() calls before the first iteration
    return copy.deepcopy(runner.model.state_dict()), torch.get_rng_state()


def assert_host_paired(base: Dict[str, torch.Tensor], variant: Dict[str, torch.Tensor]) -> None:
    differ = [k for k in base if k not in variant or not torch.equal(base[k], variant[k])]
    assert not differ, f'{len(differ)}/{len(base)} host tensors differ, e.g. {differ[:4]}'


def added_entries(base: Dict[str, torch.Tensor],
                  variant: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in variant.items() if k not in base}


@pytest.mark.parametrize('variant', ['reattention', 'drloc'])
def test_digits_variant_initialises_the_baseline_host_and_its_own_modules_per_seed(
        variant, tmp_path):
    """digits_regularizers.py: Re-attention (modules in every backbone attention) and DRLoc (an
    MLP on the classifier) leave every baseline tensor and the random stream as they are; the
    added weights are the same for a seed and differ across seeds."""
    base, base_rng = initialised('digits_regularizers.py', 'baseline', 0, str(tmp_path))
    ours, rng = initialised('digits_regularizers.py', variant, 0, str(tmp_path))
    assert_host_paired(base, ours)
    assert torch.equal(rng, base_rng)
    added = added_entries(base, ours)
    assert added
    again = added_entries(base, initialised('digits_regularizers.py', variant, 0,
                                            str(tmp_path / 'again'))[0])
    other = added_entries(base, initialised('digits_regularizers.py', variant, 1,
                                            str(tmp_path))[0])
    assert all(torch.equal(added[k], again[k]) for k in added)
    drawn = [k for k in added if added[k].numel() > 1 and added[k].float().std() > 0]
    assert drawn and not any(torch.equal(added[k], other[k]) for k in drawn)


@pytest.mark.parametrize('preset', ['digit_scenes_detection.py', 'digit_scenes_hoi.py'])
def test_suite_drloc_on_a_detector_initialises_the_baseline_host(preset, tmp_path):
    """suite_digits_cpu.py's other tasks: DRLoc's MLP on the FCOS / QPIC detector itself."""
    base, base_rng = initialised(preset, 'baseline', 0, str(tmp_path), NO_PRETRAINING)
    ours, rng = initialised(preset, 'drloc', 0, str(tmp_path), NO_PRETRAINING)
    assert any(k.startswith('drloc_head.') for k in ours)
    assert_host_paired(base, ours)
    assert torch.equal(rng, base_rng)


def test_deepvit_initialises_the_vit_of_the_same_depth(tmp_path):
    """deepvit_depth.py: DeepViT-32 (Re-attention added by the backbone itself, plus the
    attention-cosine loss) against ViT-32, shrunk."""
    base, base_rng = initialised('deepvit_depth.py', 'vit32', 0, str(tmp_path), TINY_DEEPVIT)
    ours, rng = initialised('deepvit_depth.py', 'deepvit32', 0, str(tmp_path), TINY_DEEPVIT)
    assert any('.reattention.' in k for k in ours)
    assert_host_paired(base, ours)
    assert torch.equal(rng, base_rng)


def test_pretrained_checkpoint_still_loads_the_added_modules(tmp_path):
    """A backbone ``Pretrained`` checkpoint holding Re-attention weights loads them, while the
    host draws what the plain ViT draws (mmengine's own init no longer reaches the added
    modules)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    cfg = vit_classifier_cfg()
    cfg['backbone'] = dict(cfg['backbone'], type='Regularized', host='VisionTransformer',
                           reattention=dict())
    trained = MODELS.build(cfg)
    with torch.no_grad():
        for p in trained.parameters():
            p.fill_(0.25)
    path = str(tmp_path / 'trained.pth')
    torch.save(dict(state_dict=trained.state_dict()), path)
    rngs, models = [], []
    for backbone in (dict(TINY_VIT), dict(cfg['backbone'])):
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
        torch.manual_seed(0)
        model = MODELS.build(dict(vit_classifier_cfg(), backbone=backbone))
        model.init_weights()
        rngs.append(torch.get_rng_state())
        models.append(model)
    assert torch.equal(rngs[0], rngs[1])
    mixing = models[1].backbone.layers[1].attn.reattention
    assert torch.all(mixing.reatten_matrix.weight == 0.25)
    assert torch.all(models[1].backbone.layers[0].attn.qkv.weight == 0.25)


def test_added_modules_run_their_own_init():
    """DRLoc's heads sit in a ``ModuleList`` loss term, which mmengine's init passes by: they
    now get their documented init (trunc-normal std 0.02 linear layers, zero bias)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    model = MODELS.build(vit_classifier_cfg(drloc=dict(num_pairs=4)))
    model.init_weights()
    first = model.drloc_head[0].mlp[0]
    assert 0.015 < first.weight.std().item() < 0.025  # PyTorch's default here: ~0.072
    assert torch.all(first.bias == 0)


def test_torch_only_use_leaves_every_global_generator_alone():
    """``apply_regularizers`` on a timm ViT (no mmengine): torch, numpy and Python draws after
    it are those without it."""
    import random

    import timm

    def draws(regularize: bool):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        model = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32,
                                  patch_size=8, depth=2)
        if regularize:
            apply_regularizers(model, reattention=dict(), dropkey=dict(ratio=0.1))
        return torch.rand(3), np.random.rand(3), random.random()

    base, ours = draws(False), draws(True)
    assert torch.equal(base[0], ours[0])
    assert np.array_equal(base[1], ours[1]) and base[2] == ours[2]
