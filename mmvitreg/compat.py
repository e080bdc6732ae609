"""Scoped compatibility fixes for the pinned stack (torch >= 2.6, numpy 2, setuptools).

* torch >= 2.6 loads with ``weights_only=True`` by default, which rejects the message hub that
  mmengine pickles into its own checkpoints. :func:`install_checkpoint_loader` re-registers
  mmengine's local-file checkpoint loader (``load_from``, ``--resume``,
  ``init_cfg=dict(type='Pretrained')``) and every remote scheme (``http(s)://``,
  ``torchvision://``, ``open-mmlab://``, ``mmcls://``, ``s3://``, ``pavi://``; see
  :mod:`mmvitreg.utils.checkpoint_schemes`) with
  :func:`mmvitreg.utils.checkpoint.load_checkpoint_file`: still torch's safe loader, with numpy
  values and ``argparse.Namespace`` allow-listed and mmengine's training state skipped; full
  unpickling only for trusted files (the run's own ``--resume`` checkpoint, or an explicit
  opt-in). Plain ``torch.load`` elsewhere is untouched.
* mmengine resolves ``_base_ = 'mmdet::...'`` through ``pkg_resources`` (setuptools < 82).
  :func:`check_pkg_resources` gives one clear message when it is missing.
* ``_base_ = 'mmvitreg::dir/file.py'`` resolves to the configs shipped in the package
  (``mmvitreg/.mim/configs``): :func:`enable_mmvitreg_config_paths`.
"""
import os.path as osp
from typing import Optional

_APPLIED = False


def _load_local(filename: str, map_location: Optional[str] = None):
    from .utils.checkpoint import load_checkpoint_file
    return load_checkpoint_file(filename, map_location=map_location)


_load_local.__name__ = 'load_from_local'  # mmengine logs the loader's name


def install_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with mmvitreg's safe loader (see module docstring)."""
    global _APPLIED
    if _APPLIED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
    from .utils.checkpoint_schemes import register_safe_schemes
    register_safe_schemes()
    _APPLIED = True


def check_pkg_resources() -> None:
    """Fail with one clear line when ``pkg_resources`` (needed for ``mmdet::`` bases) is absent."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError(
            "mmengine needs 'pkg_resources' to resolve `_base_ = 'mmdet::...'` configs; "
            "install 'setuptools<82' in this environment") from exc


def _mmvitreg_config_root() -> str:
    return osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')


def enable_mmvitreg_config_paths() -> None:
    """Let mmengine configs use ``mmvitreg::dir/file.py`` bases, as ``mmdet::``/``mmpretrain::``.

    mmengine alone cannot: it accepts only its fixed list of OpenMMLab packages
    (``MODULE2PACKAGE``), locates them with ``pkg_resources`` (which points into
    ``site-packages`` also for a PEP 660 editable install, where the files are not) and gives every
    dict of such a base ``_scope_=<package>``, while mmvitreg has no registry scope of its own (its
    types live in the mmpretrain and mmdet registries). So ``mmvitreg::`` is resolved here to
    ``.mim/configs`` of the imported package and adds no scope: the base behaves exactly like a
    local file (its own ``default_scope`` applies). Other packages' paths are untouched. Needs
    ``import mmvitreg`` before the config is parsed (mmvitreg's tools and ``mim`` do that).
    """
    from mmengine.config import Config
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmvitreg', 'mmvitreg')  # mmengine.hub.get_config('mmvitreg::...')
    original = Config.__dict__.get('_get_cfg_path')
    if not isinstance(original, staticmethod) or getattr(original.__func__, '_mmvitreg', False):
        return
    original = original.__func__

    def _get_cfg_path(cfg_path: str, filename: str):
        if isinstance(cfg_path, str) and cfg_path.startswith('mmvitreg::'):
            path = osp.join(_mmvitreg_config_root(), cfg_path.partition('::')[2])
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'config {cfg_path!r} not found: no file {path} in the installed mmvitreg')
            return path, None
        return original(cfg_path, filename)

    _get_cfg_path._mmvitreg = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
