import json
import os
import os.path as osp

from mmvitreg.benchmark.logs import (curve, extract_error, find_checkpoint, last_val_metrics,
                                     load_run_scalars, read_peak_memory, read_scalars,
                                     read_test_metrics, split_train_val)


def _write_lines(path, records, tail=''):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')
        f.write(tail)


def _train(step, loss, epoch=1):
    return {'lr': 0.1, 'loss': loss, 'time': 0.5, 'epoch': epoch, 'iter': step, 'step': step}


def test_split_and_curves_from_a_scalars_file(tmp_path):
    path = str(tmp_path / '20240101_000000' / 'vis_data' / 'scalars.json')
    _write_lines(path, [_train(1, 2.3), _train(2, 2.1),
                        {'accuracy/top1': 40.0, 'data_time': 0.1, 'time': 0.2, 'step': 1},
                        _train(3, 1.9, 2), {'accuracy/top1': 55.0, 'time': 0.2, 'step': 2}],
                 tail='{"loss": 1.')  # a line being written right now is ignored
    records = read_scalars(path)
    assert len(records) == 5
    train, val = split_train_val(records)
    assert [r['step'] for r in train] == [1, 2, 3] and len(val) == 2
    assert curve(train, 'loss') == ([1, 2, 3], [2.3, 2.1, 1.9])
    assert curve(val, 'accuracy/top1') == ([1, 2], [40.0, 55.0])
    assert last_val_metrics(val) == {'accuracy/top1': 55.0}  # bookkeeping keys dropped


def test_resumed_sessions_are_merged(tmp_path):
    _write_lines(str(tmp_path / '20240101_000000/vis_data/scalars.json'),
                 [_train(1, 2.3), _train(2, 2.2), {'acc': 10.0, 'step': 1}])
    # resumed from the epoch-1 checkpoint: step 2 is logged again, the later value wins
    _write_lines(str(tmp_path / '20240101_010000/vis_data/scalars.json'),
                 [_train(2, 2.0), _train(3, 1.8), {'acc': 20.0, 'step': 2}])
    os.makedirs(tmp_path / 'not_a_session' / 'vis_data')
    train, val = load_run_scalars(str(tmp_path))
    assert curve(train, 'loss') == ([1, 2, 3], [2.3, 2.0, 1.8])
    assert curve(val, 'acc') == ([1, 2], [10.0, 20.0])


def test_read_test_metrics_takes_latest_session(tmp_path):
    assert read_test_metrics(str(tmp_path)) is None
    for ts, acc in (('20240101_000000', 1.0), ('20240102_000000', 2.0)):
        os.makedirs(tmp_path / ts)
        (tmp_path / ts / f'{ts}.json').write_text(json.dumps(
            {'accuracy/top1': acc, 'hico/full': 0.5, 'data_time': 0.1, 'time': 0.2}))
    assert read_test_metrics(str(tmp_path)) == {'accuracy/top1': 2.0, 'hico/full': 0.5}


def test_read_peak_memory_takes_the_max(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'peak_memory.json').write_text(json.dumps({'peak_rss_mb': 300.0}))
    _write_lines(str(tmp_path / 'b/vis_data/scalars.json'),
                 [{'peak_rss_mb': 500.0, 'peak_cuda_mb': 20.0, 'step': 1}])
    assert read_peak_memory(str(tmp_path)) == {'peak_rss_mb': 500.0, 'peak_cuda_mb': 20.0}


def test_extract_error_prefers_the_tools_error_line():
    log = ('loading...\nerror: ValueError: DropKey ratio must be in [0, 1), got 1.2  '
           '[MMVITREG_DEBUG=1 shows the traceback]\n')
    assert extract_error(log) == 'ValueError: DropKey ratio must be in [0, 1), got 1.2'
    tb = ('Traceback (most recent call last):\n  File "x.py", line 1\n'
          'RuntimeError: CUDA out of memory\n  [W] some warning after\n')
    assert extract_error(tb) == 'RuntimeError: CUDA out of memory'
    assert extract_error('just\nKilled\n') == 'Killed'
    assert extract_error('') == 'no output'
    assert len(extract_error('error: ' + 'x' * 1000)) == 300


def test_find_checkpoint(tmp_path):
    assert find_checkpoint(str(tmp_path)) is None
    (tmp_path / 'epoch_1.pth').write_text('a')
    (tmp_path / 'epoch_2.pth').write_text('b')
    (tmp_path / 'best_acc_epoch_1.pth').write_text('c')
    # last_checkpoint written on another machine: found by its file name
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/run/epoch_2.pth')
    assert find_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    assert find_checkpoint(str(tmp_path), 'best') == str(tmp_path / 'best_acc_epoch_1.pth')
