"""Packaging: configs/tools shipped in ``mmvitreg/.mim``, ``mmvitreg::`` config bases, the wheel.

The wheel tests build the wheel from a copy of the checkout (what a fresh clone holds: building
in place would leave ``build/`` and ``*.egg-info`` in the shared checkout, and a stale ``build/``
can ship deleted modules), install it non-editable into a scratch virtual environment that reuses
the test interpreter's installed packages but not its editable install of this checkout, and use
it from a folder outside the checkout, in fresh processes.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest
from mmengine.config import Config
from mmengine.fileio import load

import mmvitreg  # noqa: F401  (enables `mmvitreg::` config bases)
from tests._helpers import REPO, TINY_DIGITS_OPTIONS

DIGITS = 'vit/vit-tiny-p4_1xb32-15e_digits-16px.py'
# Folders of configs/ that hold no model configs (shared bases, benchmark presets).
NOT_MODELS = {'_base_', 'benchmark'}


def _model_configs():
    found = set()
    for method in sorted(os.listdir(osp.join(REPO, 'configs'))):
        folder = osp.join(REPO, 'configs', method)
        if method in NOT_MODELS or not osp.isdir(folder):
            continue
        found |= {f'configs/{method}/{name}' for name in os.listdir(folder) if name.endswith('.py')}
    return found


# ---------------------------------------------------------------- the checkout (editable install)

def test_mim_folder_links_the_checkout():
    mim = osp.join(REPO, 'mmvitreg', '.mim')
    for name in ('configs', 'tools', 'model-index.yml'):
        assert osp.islink(osp.join(mim, name)), f'mmvitreg/.mim/{name} should be a symlink'
        assert osp.realpath(osp.join(mim, name)) == osp.realpath(osp.join(REPO, name))


def test_model_index_lists_every_model_config_once():
    index = load(osp.join(REPO, 'model-index.yml'))
    listed, names = [], []
    for metafile in index['Import']:
        meta = load(osp.join(REPO, metafile))
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['In Collection'] in collections, model['Name']
            assert osp.isfile(osp.join(REPO, model['Config'])), model['Config']
            assert osp.splitext(osp.basename(model['Config']))[0] == model['Name']
            assert 'Results' in model and 'Weights' in model, model['Name']
            listed.append(model['Config'])
            names.append(model['Name'])
    assert len(set(names)) == len(names), 'model names must be unique'
    missing, extra = _model_configs() - set(listed), set(listed) - _model_configs()
    assert not missing, f'add these configs to their configs/<method>/metafile.yml: {missing}'
    assert not extra and len(listed) == len(set(listed)), extra


def test_mmvitreg_base_trains_from_a_user_config(tmp_path):
    """A base from the package behaves like a local file: no `_scope_='mmvitreg'` is injected
    (mmvitreg has no registry scope of its own), so the runner builds and trains."""
    from mmengine.runner import Runner
    user = tmp_path / 'my_digits.py'
    user.write_text(f"_base_ = 'mmvitreg::{DIGITS}'\ntrain_cfg = dict(max_epochs=1)\n")
    cfg = Config.fromfile(str(user))
    cfg.merge_from_dict({k: int(v) for k, v in
                         (o.split('=') for o in TINY_DIGITS_OPTIONS)})
    path, scope = Config._get_cfg_path(f'mmvitreg::{DIGITS}', str(user))
    assert osp.realpath(path) == osp.realpath(osp.join(REPO, 'configs', DIGITS)) and scope is None
    assert cfg.default_scope == 'mmpretrain' and '_scope_' not in cfg.model
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


def test_unknown_mmvitreg_base_is_one_clear_error(tmp_path):
    user = tmp_path / 'bad.py'
    user.write_text("_base_ = 'mmvitreg::dropkey/no-such-config.py'\n")
    with pytest.raises(FileNotFoundError, match=r"'mmvitreg::dropkey/no-such-config.py' not found"):
        Config.fromfile(str(user))


# ---------------------------------------------------------------- the wheel, installed non-editable

def _copy_checkout(dst: str) -> None:
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', 'build', 'dist', '*.egg-info')
    os.makedirs(dst)
    for name in ('pyproject.toml', 'README.md', 'model-index.yml'):
        shutil.copy2(osp.join(REPO, name), dst)
    for name in ('mmvitreg', 'configs', 'tools'):
        shutil.copytree(osp.join(REPO, name), osp.join(dst, name), symlinks=True, ignore=ignore)


@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    """(wheel path, scratch python, scratch site-packages, a folder outside the checkout)."""
    root = tmp_path_factory.mktemp('wheel')
    src, dist = str(root / 'src'), str(root / 'dist')
    _copy_checkout(src)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '--no-index', '-q', src, '-w', dist], check=True, capture_output=True)
    (wheel,) = [osp.join(dist, f) for f in os.listdir(dist) if f.endswith('.whl')]

    venv = str(root / 'venv')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
    python = osp.join(venv, 'bin', 'python')
    purelib = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    site = subprocess.run([python, '-c', purelib],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
                    '--target', site, wheel], check=True, capture_output=True)
    # Reuse the test interpreter's packages: a path line in a .pth only appends the folder to
    # sys.path (its own .pth files, e.g. the editable finder of this checkout, are not run).
    reused = [sysconfig.get_paths()['purelib']]
    mim = importlib.util.find_spec('mim')
    if mim is not None:  # wherever openmim (and what it imports) was found
        reused.append(osp.dirname(osp.dirname(mim.origin)))
    with open(osp.join(site, 'zz_reuse_test_env.pth'), 'w') as f:
        f.write(''.join(p + '\n' for p in dict.fromkeys(reused)))
    outside = root / 'user'
    outside.mkdir()
    return wheel, python, site, str(outside)


def _run(python, args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONNOUSERSITE'] = '1'
    proc = subprocess.run([python] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_wheel_ships_configs_tools_and_every_subpackage(wheel_env):
    wheel = wheel_env[0]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in ('model-index.yml', 'configs/dropkey/deit-small_dropkey_4xb256_in1k.py',
                     'configs/dropkey/metafile.yml', 'configs/_base_/models/vit-tiny-p4_16px.py',
                     'tools/train.py', 'tools/test.py', 'tools/dist_train.sh'):
            assert f'mmvitreg/.mim/{name}' in names, name
        # copies, not links: same bytes as the checkout's file
        with open(osp.join(REPO, 'configs', DIGITS), 'rb') as f:
            assert zf.read(f'mmvitreg/.mim/configs/{DIGITS}') == f.read()
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    shipped = {n[len('mmvitreg/.mim/'):] for n in names
               if n.startswith('mmvitreg/.mim/configs/') and n.endswith('.py')}
    assert {n for n in shipped
            if n.count('/') == 2 and n.split('/')[1] not in NOT_MODELS} == _model_configs()
    # every package of the checkout is in the wheel (automatic discovery, no hard-coded list)
    for folder, _, files in os.walk(osp.join(REPO, 'mmvitreg')):
        if '__init__.py' in files and '__pycache__' not in folder:
            rel = osp.relpath(folder, REPO).replace(os.sep, '/')
            assert f'{rel}/__init__.py' in names, rel


def test_installed_wheel_builds_a_model_from_an_mmvitreg_base(wheel_env):
    _, python, site, outside = wheel_env
    with open(osp.join(outside, 'my_dropkey.py'), 'w') as f:
        f.write("_base_ = 'mmvitreg::dropkey/deit-small_dropkey_4xb256_in1k.py'\n"
                "model = dict(head=dict(num_classes=10))\n")
    script = textwrap.dedent('''
        import json, sys
        import mmvitreg
        from mmengine.config import Config
        from mmengine.hub import get_config
        from mmdet.registry import MODELS as DET_MODELS
        from mmpretrain.registry import MODELS
        out = dict(mmvitreg=mmvitreg.__file__)
        sfp = DET_MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=8, out_channels=8))
        out['sfp'] = sys.modules[type(sfp).__module__].__file__
        out['base'] = Config._get_cfg_path(
            'mmvitreg::dropkey/deit-small_dropkey_4xb256_in1k.py', '')[0]
        cfg = Config.fromfile('my_dropkey.py')
        out['dropkey'] = cfg.model.backbone.dropkey.to_dict()
        model = MODELS.build(cfg.model)
        out['model'] = [type(model).__name__, type(model.backbone).__name__,
                        model.head.num_classes]
        hub = get_config('mmvitreg::%s')
        out['hub'] = [hub.model.backbone.type, hub.default_scope]
        print('RESULT ' + json.dumps(out))
    ''' % DIGITS)
    proc = _run(python, ['-c', script], outside)
    out = json.loads(proc.stdout.split('RESULT ', 1)[1])
    for key in ('mmvitreg', 'sfp', 'base'):
        assert out[key].startswith(site + os.sep), (key, out[key])   # the wheel's copy
    assert out['base'].endswith('mmvitreg/.mim/configs/dropkey/deit-small_dropkey_4xb256_in1k.py')
    assert out['dropkey']['ratio'] == 0.1
    assert out['model'] == ['ImageClassifier', 'VisionTransformer', 10]
    assert out['hub'][1] == 'mmpretrain'


@pytest.mark.skipif(importlib.util.find_spec('mim') is None,
                    reason='openmim is not installed (optional: see the README on installed '
                    'configs)')
def test_mim_train_and_test_with_the_installed_wheel(wheel_env):
    _, python, site, outside = wheel_env
    work = osp.join(outside, 'mim_work')
    options = (['train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1']
               + TINY_DIGITS_OPTIONS)
    name = osp.basename(DIGITS)
    proc = _run(python, ['-m', 'mim', 'train', 'mmvitreg', name, '--work-dir', work,
                         '--cfg-options'] + options, outside)
    assert osp.join(site, 'mmvitreg', '.mim', 'tools', 'train.py') in proc.stdout
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    proc = _run(python, ['-m', 'mim', 'test', 'mmvitreg', name, '--checkpoint', ckpt,
                         '--work-dir', osp.join(outside, 'mim_test'), '--cfg-options']
                + TINY_DIGITS_OPTIONS, outside)
    assert 'accuracy/top1' in proc.stdout + proc.stderr
