"""Every mmengine checkpoint scheme loads through the safe loader: a crafted file in the torch hub
cache (what ``load_from='https://…'`` and ``init_cfg`` ``torchvision://resnet50`` read) is refused
without running code. No network: the files are placed in a temporary ``TORCH_HOME``."""
import os
import os.path as osp
from urllib.parse import urlparse

import pytest
import torch
from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint, get_torchvision_models

import mmvitreg  # noqa: F401  (installs the loaders into mmengine)
from mmvitreg.utils.checkpoint import UntrustedCheckpointError

URL = 'https://download.example.org/models/tiny_model-0123abcd.pth'


class _SystemCall:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A temporary hub cache; downloading is an error (the files must come from the cache)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))

    def no_network(*args, **kwargs):
        raise AssertionError('tried to download')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    cache = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(cache)
    return cache


def _place(cache: str, url: str, obj) -> None:
    torch.save(obj, osp.join(cache, osp.basename(urlparse(url).path)))


@pytest.mark.parametrize('source', [URL, 'torchvision://resnet50', 'modelzoo://resnet50'])
def test_crafted_file_in_hub_cache_is_refused(tmp_path, hub_cache, source):
    marker = tmp_path / 'code_ran'
    url = URL if source == URL else get_torchvision_models()['resnet50']
    _place(hub_cache, url, dict(state_dict={'w': torch.ones(1)}, x=_SystemCall(f'touch {marker}')))
    with pytest.raises(UntrustedCheckpointError) as exc:
        _load_checkpoint(source, map_location='cpu')  # what load_from uses
    assert len(str(exc.value).splitlines()) == 1
    model = torch.nn.Linear(1, 1)
    with pytest.raises(UntrustedCheckpointError):
        PretrainedInit(checkpoint=source)(model)  # init_cfg=dict(type='Pretrained', ...)
    assert not marker.exists(), 'unpickling ran code'


def test_plain_weights_in_hub_cache_load(hub_cache):
    _place(hub_cache, get_torchvision_models()['resnet50'], {'fc.weight': torch.ones(2, 1)})
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(1, 2, bias=False)
    PretrainedInit(checkpoint='torchvision://resnet50')(model)
    assert torch.equal(model.fc.weight, torch.ones(2, 1))
    _place(hub_cache, URL, {'state_dict': {'w': torch.zeros(3)}})
    assert torch.equal(_load_checkpoint(URL, map_location='cpu')['state_dict']['w'], torch.zeros(3))
