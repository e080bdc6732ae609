"""The attention-collapse tool, the visualisation tool and the hook on a tiny model and data."""
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from tests._helpers import DIGITS_CONFIG, TINY_DIGITS_OPTIONS, run_main

TOOL = 'analysis_tools/attention_collapse'
VIS = 'visualization/vis_attention'
REATT = ['model.backbone.type=Regularized', 'model.backbone.host=VisionTransformer',
         'model.backbone.reattention.last_k=2']


def test_tool_prints_matrix_and_writes_heatmap(tmp_path, capsys):
    out = tmp_path / 'collapse'
    run_main(TOOL, [DIGITS_CONFIG, '--num-batches', '2', '--batch-size', '4', '--out-dir', out,
                    '--cfg-options', 'val_dataloader.dataset.num_samples=8', *REATT])
    printed = capsys.readouterr().out
    assert '6 layers, 3 heads, 8 images' in printed
    assert 'adjacent layers:' in printed
    assert (out / 'similarity.png').stat().st_size > 1000
    sim = np.load(out / 'similarity.npy')
    assert sim.shape == (6, 6, 3)
    assert np.allclose(sim, sim.transpose(1, 0, 2), atol=1e-6)
    assert np.allclose(np.diagonal(sim, axis1=0, axis2=1), 1.0, atol=1e-4)
    summary = json.loads((out / 'similarity.json').read_text())
    assert summary['images'] == 8 and len(summary['similarity']) == 6


def test_tool_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(TOOL, [DIGITS_CONFIG, tmp_path / 'missing.pth', '--out-dir', tmp_path])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert 'error: ' in err and 'missing.pth' in err and len(err.strip().splitlines()) == 1


def test_vis_attention_writes_png(tmp_path, capsys):
    img = np.zeros((40, 40, 3), np.uint8)
    img[8:24, 10:30] = (255, 0, 0)
    Image.fromarray(img).save(tmp_path / 'in.png')
    out = tmp_path / 'vis' / 'attn.png'
    run_main(VIS, [DIGITS_CONFIG, '--img', tmp_path / 'in.png', '--out', out, '--layers', '0',
                   '5', '--head', '1', '--cfg-options', *REATT])
    assert 'of 2 layers' in capsys.readouterr().out and out.stat().st_size > 1000
    with pytest.raises(SystemExit):
        run_main(VIS, [DIGITS_CONFIG, '--img', tmp_path / 'in.png', '--out', out, '--layers', '9'])
    assert 'out of range for 6 attention layers' in capsys.readouterr().err


def test_hook_runs_after_validation(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mmvitreg  # noqa: F401
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.merge_from_dict({o.split('=')[0]: int(o.split('=')[1]) for o in TINY_DIGITS_OPTIONS})
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**9, by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    cfg.custom_hooks = [dict(type='AttentionCollapseHook', num_batches=1)]
    cfg.model.backbone = dict(cfg.model.backbone, type='Regularized', host='VisionTransformer',
                              reattention=dict(last_k=1))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ == 'AttentionCollapseHook'][0]
    assert hook.last_similarity.shape == (6, 6, 3)
    assert osp.isfile(tmp_path / 'attention_collapse' / 'epoch_0_iter_1.png')
    assert 'val/attn_collapse/adjacent' in runner.message_hub.log_scalars
