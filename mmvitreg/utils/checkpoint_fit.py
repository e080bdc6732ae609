"""How well a checkpoint fits a model, for ``tools/test.py``.

mmengine loads ``load_from`` non-strictly and only logs the missing keys, so a checkpoint of
another model evaluates silently with (partly) random weights. :func:`check_checkpoint_fits`
compares the checkpoint's ``state_dict`` (``module.`` prefixes stripped, as mmengine does) with the
model's and refuses in one line when model tensors are missing or have another shape, unless
``allow_partial`` (then it only warns, with the counts).
"""
import re
from typing import Dict, List, Mapping, NamedTuple

import torch


class CheckpointFit(NamedTuple):
    """Keys of the model missing from the checkpoint, checkpoint keys the model lacks, and keys
    whose shapes differ; ``total``: the number of model tensors."""
    missing: List[str]
    unexpected: List[str]
    mismatched: List[str]
    total: int


def checkpoint_fit(model_state: Mapping[str, torch.Tensor],
                   ckpt_state: Mapping[str, torch.Tensor]) -> CheckpointFit:
    """Compare two state dicts (pure: keys and shapes only)."""
    ckpt: Dict[str, torch.Tensor] = {re.sub(r'^module\.', '', k): v for k, v in ckpt_state.items()}
    missing = [k for k in model_state if k not in ckpt]
    unexpected = [k for k in ckpt if k not in model_state]
    mismatched = [k for k, v in model_state.items() if k in ckpt
                  and tuple(getattr(ckpt[k], 'shape', ())) != tuple(v.shape)]
    return CheckpointFit(missing, unexpected, mismatched, len(model_state))


def describe(fit: CheckpointFit) -> str:
    """One line with the counts and a few example keys."""
    parts = []
    for name, keys in (('missing from the checkpoint', fit.missing),
                       ('with another shape', fit.mismatched),
                       ('in the checkpoint but not in the model', fit.unexpected)):
        if keys:
            parts.append(f'{len(keys)} {name} (e.g. {", ".join(keys[:3])})')
    return (f'{len(fit.missing) + len(fit.mismatched)} of {fit.total} model tensors not loaded: '
            + '; '.join(parts))


def check_checkpoint_fits(model: torch.nn.Module, path: str, allow_partial: bool = False) -> None:
    """Raise ``ValueError`` (one line) when checkpoint ``path`` leaves model tensors unloaded;
    with ``allow_partial``, print the same line as a warning instead."""
    from mmengine.model import is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    if is_model_wrapper(model):
        model = model.module
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else {}
    fit = checkpoint_fit(model.state_dict(), state)
    if not (fit.missing or fit.mismatched or fit.unexpected):
        return
    msg = f'checkpoint {path} does not fit the model: {describe(fit)}'
    if (fit.missing or fit.mismatched) and not allow_partial:
        raise ValueError(f'{msg}; pass --allow-partial-checkpoint to evaluate anyway')
    print(f'WARNING: {msg}', flush=True)
