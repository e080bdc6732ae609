"""tools/visualization/vis_hoi_attention.py: one row per model, printed triplets, one-line
errors."""
import os.path as osp

import pytest
import torch
from PIL import Image

from mmvitreg.testing import make_hico_dataset
from tests._helpers import REPO, load_tool

CONFIG = osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from mmvitreg.apis import init_hoi_model
    root = tmp_path_factory.mktemp('vis_hoi_attention')
    make_hico_dataset(str(root), num_train=0, num_test=1, seed=4)
    ckpts = []
    for seed in (0, 1):  # two different models
        torch.manual_seed(seed)
        ckpts.append(str(root / f'model{seed}.pth'))
        torch.save({'state_dict': init_hoi_model(CONFIG, None).state_dict(), 'meta': {}},
                   ckpts[-1])
    return osp.join(root, 'images', 'test2015', 'HICO_test2015_00000001.jpg'), ckpts


def test_two_models_two_rows(setup, tmp_path, capsys):
    image, (ckpt_a, ckpt_b) = setup
    out = tmp_path / 'attn.png'
    load_tool('visualization/vis_hoi_attention').main(
        [image, '--out', str(out), '--topk', '2', '--model', 'A', CONFIG, ckpt_a,
         '--model', 'B', CONFIG, ckpt_b])
    lines = capsys.readouterr().out.strip().splitlines()
    panels = [line for line in lines if 'attention in boxes' in line]
    assert [line.split(':')[0] for line in panels] == ['A', 'A', 'B', 'B']
    assert all(0.0 <= float(line.split()[-1]) <= 1.0 for line in panels)
    assert lines[-1].startswith('2 models, colour scale 0..') and str(out) in lines[-1]
    width, height = Image.open(out).size
    assert height > 300 and width > height  # two rows of two panels and a colour bar


def test_bad_layer_is_one_line(setup, tmp_path, capsys):
    image, (ckpt, _) = setup
    with pytest.raises(SystemExit):
        load_tool('visualization/vis_hoi_attention').main(
            [image, '--out', str(tmp_path / 'a.png'), '--layer', '9', '--model', 'A', CONFIG,
             ckpt])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '--layer 9 out of range' in err
