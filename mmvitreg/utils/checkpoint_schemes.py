"""mmengine's checkpoint URL schemes, re-registered to load through the safe loader.

mmengine's ``http(s)://``, ``torchvision://``/``modelzoo://``, ``open-mmlab://``, ``mmcls://``,
``pavi://`` and ``s3://``/``petrel://`` loaders end in ``torch.load`` with full unpickling (through
``torch.hub``'s cache for URLs), so a crafted file in the hub cache would run code. These loaders
resolve names and download exactly as mmengine does (same model lists, same
``$TORCH_HOME/hub/checkpoints/<file name>`` cache as ``torch.hub.load_state_dict_from_url``) and
then read the local file with :func:`mmvitreg.utils.checkpoint.load_checkpoint_file`, so every
scheme follows one trust rule. :func:`register_safe_schemes` installs them (``import mmvitreg``
does).
"""
import os
import os.path as osp
import tempfile
from typing import Any, Optional
from urllib.parse import urlparse

import torch

from .checkpoint import load_checkpoint_file


def load_from_http(filename: str, map_location=None, model_dir: Optional[str] = None,
                   progress: bool = False) -> Any:
    """Download ``filename`` into the torch hub cache (once; rank 0 first) and load it safely."""
    from mmengine.dist import get_dist_info
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.exists(cached):
        os.makedirs(model_dir, exist_ok=True)
        torch.hub.download_url_to_file(filename, cached, None, progress=progress)
    if world_size > 1:
        torch.distributed.barrier()
    return load_checkpoint_file(cached, map_location=map_location)


def load_from_torchvision(filename: str, map_location=None) -> Any:
    """``torchvision://name`` (or the deprecated ``modelzoo://name``) as in mmengine."""
    from mmengine.runner.checkpoint import get_torchvision_models
    name = filename.split('://', 1)[1]
    return load_from_http(get_torchvision_models()[name], map_location=map_location)


def load_from_openmmlab(filename: str, map_location=None) -> Any:
    """``open-mmlab://name`` / ``openmmlab://name`` as in mmengine."""
    from mmengine.runner.checkpoint import (_get_mmengine_home, get_deprecated_model_names,
                                            get_external_models)
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    url = get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return load_checkpoint_file(osp.join(_get_mmengine_home(), url), map_location=map_location)


def load_from_mmcls(filename: str, map_location=None) -> Any:
    """``mmcls://name`` as in mmengine (classifier keys renamed to a backbone)."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models
    url = get_mmcls_models()[filename[len('mmcls://'):]]
    return _process_mmcls_checkpoint(load_from_http(url, map_location=map_location))


def _load_bytes(data: bytes, name: str, map_location) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, osp.basename(name) or 'checkpoint.pth')
        with open(path, 'wb') as f:
            f.write(data)
        return load_checkpoint_file(path, map_location=map_location)


def load_from_ceph(filename: str, map_location=None, backend: str = 'petrel') -> Any:
    """``s3://`` / ``petrel://`` through mmengine's file backend, loaded safely."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    return _load_bytes(data, filename, map_location)


def load_from_pavi(filename: str, map_location=None) -> Any:  # pragma: no cover - needs pavi
    """``pavi://`` model cloud files, downloaded as in mmengine and loaded safely."""
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return load_checkpoint_file(path, map_location=map_location)


def register_safe_schemes() -> None:
    """Replace mmengine's loaders of every remote scheme by the safe ones above."""
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefixes, loader in ((('http://', 'https://'), load_from_http),
                             (('modelzoo://', 'torchvision://'), load_from_torchvision),
                             (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
                             ('mmcls://', load_from_mmcls), ('pavi://', load_from_pavi),
                             ([r'(\S+\:)?s3://', r'(\S+\:)?petrel://'], load_from_ceph)):
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
