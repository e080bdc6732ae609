"""tools/hoi_demo.py and tools/test.py --show-dir: pictures of HOI predictions (tiny QPIC)."""
import glob
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmvitreg.testing import make_hico_dataset
from tests._helpers import REPO, run_main, run_tool

CONFIG = osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Generated HICO-DET test images and a checkpoint of the randomly initialised tiny QPIC."""
    from mmvitreg.apis import init_hoi_model
    root = tmp_path_factory.mktemp('hoi_demo')
    make_hico_dataset(str(root), num_train=0, num_test=3, seed=2)
    ckpt = str(root / 'tiny.pth')
    torch.save({'state_dict': init_hoi_model(CONFIG, None).state_dict(), 'meta': {}}, ckpt)
    return root, ckpt


def assert_picture_of(picture: str, image: str) -> None:
    assert osp.isfile(picture), picture
    drawn, original = mmcv.imread(picture), mmcv.imread(image)
    assert drawn.shape == original.shape
    # JPEG re-encoding alone changes pixels by a few levels; drawing changes some a lot
    assert (np.abs(drawn.astype(int) - original).max(-1) > 60).mean() > 0.005


def test_demo_in_a_fresh_process(setup, tmp_path):
    root, ckpt = setup
    image = osp.join(root, 'images', 'test2015', 'HICO_test2015_00000001.jpg')
    out = str(tmp_path / 'pics' / 'demo.jpg')
    res = run_tool([osp.join(REPO, 'tools', 'hoi_demo.py'), image, CONFIG, ckpt, '--out', out,
                    '--topk', '3'], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_picture_of(out, image)
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == f'3 triplets drawn on {out}'
    scores = [float(line.split()[0]) for line in lines[-4:-1]]
    assert scores == sorted(scores, reverse=True) and 'subject [' in lines[-2]


def test_demo_bad_input_is_one_line(setup, tmp_path, capsys):
    root, ckpt = setup
    with pytest.raises(SystemExit):
        run_main('hoi_demo', [str(tmp_path / 'none.jpg'), CONFIG, ckpt])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'image file not found' in err


def test_test_tool_show_dir_saves_a_picture_per_test_image(setup, tmp_path):
    root, ckpt = setup
    show = tmp_path / 'show'
    run_main('test', [CONFIG, ckpt, '--work-dir', tmp_path / 'work', '--show-dir', show,
                      '--cfg-options', f'test_dataloader.dataset.data_root={root}'])
    images = sorted(glob.glob(osp.join(root, 'images', 'test2015', '*.jpg')))
    assert len(images) == 3
    assert sorted(osp.basename(p) for p in glob.glob(str(show / '*.jpg'))) == \
        [osp.basename(p) for p in images]
    for image in images:
        assert_picture_of(str(show / osp.basename(image)), image)
