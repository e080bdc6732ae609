"""Stack compatibility: torch>=2.6 weights_only vs mmengine checkpoints, toolbox config bases."""
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint

import mmvitreg  # noqa: F401  (applies the compat fixes)


def test_mmengine_checkpoint_with_message_hub_loads(tmp_path):
    """mmengine's local-file loader is mmvitreg's safe loader: an mmengine checkpoint loads
    (weights, numpy meta) although torch's plain default refuses its message hub."""
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'ckpt.pth')
    buf = HistoryBuffer()
    buf.update(1.0)
    buf.update(0.5)
    hub = dict(log_scalars={'train/loss': buf})
    torch.save(dict(state_dict=model.state_dict(), message_hub=hub,
                    meta=dict(epoch=1, np_value=np.float64(0.3))), path)
    try:
        torch.load(path)
        refused = False
    except Exception:
        refused = True
    assert refused, 'torch.load default should still be weights_only (scoped fix only)'
    assert CheckpointLoader._schemes[''].__module__ == 'mmvitreg.compat'
    ckpt = _load_checkpoint(path, map_location='cpu')
    assert ckpt['meta']['np_value'] == 0.3
    other = torch.nn.Linear(3, 2)
    load_checkpoint(other, path, map_location='cpu')
    torch.testing.assert_close(other.weight, model.weight)


def test_toolbox_config_bases_resolve():
    cfg = Config.fromfile('configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py')
    assert cfg.default_scope == 'mmpretrain'   # from 'mmpretrain::_base_/default_runtime.py'
    det = Config.fromstring("_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'\n", '.py')
    assert det.model.type == 'RetinaNet' and det.default_scope == 'mmdet'
