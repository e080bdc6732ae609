"""vis_attention: input size from the config/model, one colour scale with a colour bar."""
import importlib.util

import numpy as np
from PIL import Image

from tests._helpers import DIGITS_CONFIG, REPO


def _tool():
    spec = importlib.util.spec_from_file_location(
        'vis_attention', f'{REPO}/tools/visualization/vis_attention.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_input_size_comes_from_the_model_and_panels_share_one_scale(tmp_path, capsys):
    img = np.zeros((40, 40, 3), np.uint8)
    img[8:24, 10:30] = (255, 255, 255)
    Image.fromarray(img).save(tmp_path / 'in.png')
    out = tmp_path / 'attn.png'
    _tool().main([DIGITS_CONFIG, '--img', str(tmp_path / 'in.png'), '--out', str(out),
                  '--layers', '0', '5'])
    printed = capsys.readouterr().out
    # the digits model sees 16x16 inputs, i.e. a 4x4 patch grid (not 224 px / 56x56)
    assert '4x4 patch grid, 16 px input' in printed
    low, high = (float(v) for v in printed.split('colour scale ')[1].split(')')[0].split('..'))
    assert 0.0 <= low < high <= 1.0  # raw attention values, not per-panel 0..1 stretching
    picture = Image.open(out)
    assert picture.size[0] > picture.size[1] > 100


def test_input_size_from_pipeline_wins(tmp_path):
    from mmengine.config import Config
    tool = _tool()
    cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='ResizeEdge', scale=40), dict(type='CenterCrop', crop_size=32)]))))
    assert tool.input_size(cfg, model=None) == 32
