"""Replaying a forward call's mask key when activation checkpointing recomputes the forward.

``torch.utils.checkpoint`` (mmpretrain/mmdet ``with_cp``, timm ``grad_checkpointing``) runs a
segment's forward again inside backward. A call counter advances there, so the recomputation
would draw a *different* DropKey mask than the forward did and the gradients would be wrong
(the paper's ``bernoulli`` two-liner is protected by checkpoint restoring the RNG state).

What the recomputation repeats is that RNG state: checkpoint restores the CPU generator and the
generators of its inputs' devices to their values at the segment start, and the segment draws
the same numbers again. So each forward call records ``(fingerprint of the generator states,
key)``; a call inside backward (the autograd engine running a graph task) takes the key of the
latest recorded call of the same module with the same fingerprint not yet replayed in this
backward pass. Calls outside backward keep the counter's keys: masks are unchanged.

Not covered: ``preserve_rng_state=False`` (the fingerprint differs: a fresh key is drawn, as
the bernoulli two-liner would; a warning is logged once) and more than :data:`MAX_RECORDS`
calls of one module between two iterations.
"""
from typing import List, Optional

import torch

__all__ = ['KeyReplay', 'in_backward', 'rng_fingerprint', 'MAX_RECORDS']

#: recorded forward calls per module (the oldest are forgotten first)
MAX_RECORDS = 256


def in_backward() -> bool:
    """Whether the autograd engine is running a backward pass in this thread (a checkpointed
    segment's recomputation happens there)."""
    return torch._C._current_graph_task_id() != -1


def rng_fingerprint(device: torch.device) -> int:
    """A hash of the CPU generator state and, for a CUDA ``device``, its generator state."""
    state = torch.get_rng_state().numpy().tobytes()
    if device.type == 'cuda':
        state += torch.cuda.get_rng_state(device).numpy().tobytes()
    return hash(state)


class KeyReplay:
    """The keys of a module's forward calls by RNG fingerprint (see the module docstring)."""

    def __init__(self) -> None:
        self.records: List[list] = []  # [fingerprint, key, graph task that replayed it]
        self.warned = False  # about a call inside backward that matched no forward call

    def clear(self) -> None:
        self.records.clear()

    def record(self, fingerprint: int, key: int) -> None:
        if len(self.records) >= MAX_RECORDS:
            del self.records[0]
        self.records.append([fingerprint, key, None])

    def recall(self, fingerprint: int) -> Optional[int]:
        """The key of the latest forward call with ``fingerprint`` not yet replayed in this
        backward pass (checkpointed segments are recomputed last segment first)."""
        task = torch._C._current_graph_task_id()
        for rec in reversed(self.records):
            if rec[0] == fingerprint and rec[2] != task:
                rec[2] = task
                return rec[1]
        return None
