"""Scoped compatibility fixes for the pinned stack (torch >= 2.6, numpy 2, setuptools).

* torch >= 2.6 loads with ``weights_only=True`` by default. mmengine checkpoints are full pickles:
  besides tensors they store the message hub, whose ``HistoryBuffer`` objects pickle bound methods
  through ``builtins.getattr``; allow-listing that would make the "safe" loader unsafe anyway. So
  for mmengine's *local-file* checkpoint scheme only (``load_from``, ``--resume``,
  ``init_cfg=dict(type='Pretrained')``), mmvitreg re-registers the loader with
  ``weights_only=False``, i.e. the behaviour of torch < 2.6 that mmengine was written for. Load
  checkpoints you trust, as always with mmengine. Plain ``torch.load`` elsewhere is untouched.
* mmengine resolves ``_base_ = 'mmdet::...'`` through ``pkg_resources`` (setuptools < 82).
  :func:`check_pkg_resources` gives one clear message when it is missing.
"""
import os.path as osp
from typing import Optional

import torch

_APPLIED = False


def _load_local_trusted(filename: str, map_location: Optional[str] = None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


_load_local_trusted.__name__ = 'load_from_local'  # mmengine logs the loader's name


def allow_mmengine_checkpoints() -> None:
    """Let mmengine load its own local checkpoints under torch >= 2.6 (see module docstring)."""
    global _APPLIED
    if _APPLIED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local_trusted, force=True)
    _APPLIED = True


def check_pkg_resources() -> None:
    """Fail with one clear line when ``pkg_resources`` (needed for ``mmdet::`` bases) is absent."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError(
            "mmengine needs 'pkg_resources' to resolve `_base_ = 'mmdet::...'` configs; "
            "install 'setuptools<82' in this environment") from exc
