"""Benchmark runs keep a bounded number of checkpoints (by default the last one, plus the best
where the preset saves one), and a run that crashed part-way still resumes from its last one:
real worker runs (mmengine Runner) of a tiny digits ViT through the command line."""
import glob
import os
import os.path as osp
import textwrap

from mmvitreg.benchmark.cli import main
from tests._helpers import DIGITS_CONFIG, REPO

# every epoch saved and none deleted by the preset itself (max_keep_ckpts=-1), best kept too
PRESET = f"""
_base_ = [{DIGITS_CONFIG!r}]
custom_imports = dict(imports=['tests._helpers.fail_in_epoch_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='FailInEpochHook')]
model = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                     feedforward_channels=64)),
             head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(num_samples=32))
val_dataloader = dict(batch_size=32, dataset=dict(num_samples=32))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=3, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best='auto'))
benchmark = dict(seeds=[0], metrics=['accuracy/top1'], test=False,
                 variants=dict(baseline=dict()))
"""


def _checkpoints(run_dir: str):
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(run_dir, '*.pth')))
    return [n for n in names if n.startswith('epoch_')], [n for n in names if
                                                            n.startswith('best_')]


def test_run_keeps_last_and_best_checkpoint_and_resumes(tmp_path, monkeypatch, capsys):
    (tmp_path / 'preset.py').write_text(textwrap.dedent(PRESET))
    monkeypatch.setenv('PYTHONPATH', REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.chdir(REPO)
    wd = tmp_path / 'wd'
    run_dir = str(wd / 'baseline' / 'seed0')
    args = [str(tmp_path / 'preset.py'), '--work-dir', str(wd), '--no-plots']
    # the run crashes in epoch 3: epochs 1 and 2 were saved, only the last is left
    monkeypatch.setenv('FAIL_IN_EPOCH', '3')
    main(args)
    assert 'FAILED: train: ' in capsys.readouterr().out
    epochs, best = _checkpoints(run_dir)
    assert epochs == ['epoch_2.pth'] and len(best) == 1
    # rerun: the failed run is retried from that checkpoint and finishes; still last + best
    monkeypatch.delenv('FAIL_IN_EPOCH')
    main(args)
    out = capsys.readouterr().out
    assert 'resuming the interrupted run from its last checkpoint' in out
    assert 'resumed epoch: 2' in open(osp.join(run_dir, 'run.log')).read()
    assert '1 ran ok, 0 failed' in open(wd / 'results.md').read()
    epochs, best = _checkpoints(run_dir)
    assert epochs == ['epoch_3.pth'] and len(best) == 1
