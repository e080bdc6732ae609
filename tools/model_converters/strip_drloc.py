"""Strip the training-only DRLoc heads from a checkpoint (deploy / inference checkpoint).

A model trained with ``drloc=dict(...)`` stores its DRLoc MLPs under ``drloc_head.*``. Inference
never uses them, so this tool writes a checkpoint without those keys (and without optimizer /
message-hub state unless ``--keep-training-state``) that loads *strictly* into the same model
built without DRLoc. Without stripping, mmengine's default non-strict loading also works and only
warns about the unexpected ``drloc_head.*`` keys.

Usage::

    python tools/model_converters/strip_drloc.py work_dirs/x/epoch_100.pth deploy.pth

The key mapping is the pure function :func:`strip_drloc_state_dict` (importable; used by tests).
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import List, Mapping, Optional, Tuple

import torch

PREFIX = 'drloc_head.'


def strip_drloc_state_dict(state_dict: Mapping[str, torch.Tensor],
                           prefix: str = PREFIX) -> Tuple['OrderedDict[str, torch.Tensor]', int]:
    """Return ``(state_dict without keys under `prefix` at any depth, number removed)``.

    Keys such as ``drloc_head.0.mlp.0.weight`` (a ``Regularized`` model) and
    ``module.drloc_head.0...`` (a DDP-wrapped save) are both removed.
    """
    kept: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    removed = 0
    for key, value in state_dict.items():
        if key.startswith(prefix) or f'.{prefix}' in key:
            removed += 1
        else:
            kept[key] = value
    return kept, removed


def strip_checkpoint(src: str, dst: str, keep_training_state: bool = False) -> int:
    """Write ``src`` without DRLoc weights to ``dst``; return the number of removed tensors."""
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint not found: {src}')
    # safe load (weights + meta); the pickled training state only from a file the user trusts
    from mmvitreg.utils.checkpoint import TRUST_ENV, is_trusted, load_checkpoint_file
    if keep_training_state and not is_trusted(src):
        raise ValueError(f'--keep-training-state unpickles the full training state of {src}; '
                         f'set {TRUST_ENV}=1 if you trust the file')
    ckpt = load_checkpoint_file(src, map_location='cpu')
    if isinstance(ckpt, Mapping) and 'state_dict' in ckpt:
        state_dict, removed = strip_drloc_state_dict(ckpt['state_dict'])
        out = dict(ckpt) if keep_training_state else {'meta': ckpt.get('meta', {})}
        out['state_dict'] = state_dict
    elif isinstance(ckpt, Mapping):
        out, removed = strip_drloc_state_dict(ckpt)
    else:
        raise ValueError(f'{src} is not a checkpoint dict (got {type(ckpt).__name__})')
    if removed == 0:
        raise ValueError(f'{src} has no {PREFIX}* weights; nothing to strip')
    if keep_training_state and 'optimizer' in out:
        # optimizer state refers to the removed parameters by position; it cannot be kept.
        out.pop('optimizer')
    dirname = osp.dirname(osp.abspath(dst))
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'output directory does not exist: {dirname}')
    torch.save(out, dst)
    return removed


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint trained with DRLoc')
    parser.add_argument('dst', help='output checkpoint without drloc_head.* weights')
    parser.add_argument('--keep-training-state', action='store_true',
                        help='keep meta/message hub/param schedulers (the optimizer is dropped)')
    args = parser.parse_args(argv)
    try:
        removed = strip_checkpoint(args.src, args.dst, args.keep_training_state)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(1)
    print(f'removed {removed} DRLoc tensors; wrote {args.dst}')


if __name__ == '__main__':
    main()
