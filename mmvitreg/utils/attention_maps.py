"""Attention maps and the DeepViT *attention-collapse* diagnostic.

DeepViT (Zhou et al. 2021, Eq. 4) measures how similar the attention maps of layers ``p`` and
``q`` are with the per-head, per-token cosine similarity of the *columns* of the maps::

    M^{p,q}_{h,t} = <A^p_{h,:,t}, A^q_{h,:,t}> / (||A^p_{h,:,t}|| ||A^q_{h,:,t}||)

``A_{h,:,t}`` (a column, over all queries) says how much input token ``t`` contributes to every
output token. :func:`cross_layer_similarity` returns ``M`` averaged over tokens ``t`` and images
(``(L, L, H)``; average the last axis for one number per layer pair). Values near 1 off the
diagonal for deep layers are the collapse the paper reports.

Maps are collected with forward hooks on the attention modules of any supported model:
mmpretrain ``MultiheadAttention`` (ViT, DeiT), mmvitreg ``ReAttention`` (the *re-generated* maps,
i.e. those multiplied with ``V``), timm ``Attention`` and mmcv ``MultiheadAttention`` - the latter
through their attention sites (``mmvitreg/regularizers/attention.py``).
Only self-attention maps with as many queries as keys take part in the similarity.
"""
import contextlib
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    'find_attention_layers', 'attention_map_of', 'record_attention_maps', 'collect_attention_maps',
    'cross_layer_similarity', 'SimilarityAccumulator', 'similarity_on_batches',
    'format_similarity', 'save_similarity_heatmap', 'cls_attention_grid'
]


def find_attention_layers(model: nn.Module, target: str = '') -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of the attention layers of ``model`` in depth order."""
    from mmvitreg.regularizers.attention import find_attention_modules
    model = getattr(model, 'module', model)  # DDP-style wrappers
    return find_attention_modules(model, target)


@torch.no_grad()
def attention_map_of(module: nn.Module, *args, stage: str = 'reattention', **kwargs) -> Tensor:
    """The ``(B, H, Nq, Nk)`` attention map of one attention module for its forward inputs.

    Re-attention modules give their re-generated maps (``stage='softmax'`` for the maps before
    the head transform); other modules their softmax probabilities (no dropout, no DropKey).
    """
    from mmvitreg.regularizers.attention import attention_probs
    if stage not in ('reattention', 'softmax'):
        raise ValueError(f"attention_map stage must be 'reattention' or 'softmax', got {stage!r}")
    _, maps = attention_probs(module, *args, stage='mixed' if stage == 'reattention' else 'softmax',
                              **kwargs)
    if not maps:
        raise ValueError(f'{type(module).__name__} produced no attention map')
    return maps[0] if len(maps) == 1 else torch.cat(maps, dim=0)


@contextlib.contextmanager
def record_attention_maps(model: nn.Module,
                          target: str = '',
                          stage: str = 'reattention',
                          to_cpu: bool = False) -> Iterator[List[Optional[Tensor]]]:
    """Context manager: while active, every forward of ``model`` stores one map per layer.

    Yields a list with one slot per attention layer (depth order) holding the map of the latest
    forward. Usage::

        with record_attention_maps(model) as maps:
            model(inputs)
        # maps[l]: (B, H, N, N)
    """
    layers = find_attention_layers(model, target)
    if not layers:
        raise ValueError(f'found no supported attention layer in {type(model).__name__}')
    maps: List[Optional[Tensor]] = [None] * len(layers)
    handles = []

    def make_hook(index: int) -> Callable:

        def hook(module, args, kwargs, output):
            m = attention_map_of(module, *args, stage=stage, **kwargs)
            maps[index] = m.float().cpu() if to_cpu else m.float()

        return hook

    for i, (_, module) in enumerate(layers):
        handles.append(module.register_forward_hook(make_hook(i), with_kwargs=True))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def _forward_features(model: nn.Module, inputs: Tensor) -> None:
    if hasattr(model, 'extract_feat'):
        model.extract_feat(inputs)
    else:
        model(inputs)


@torch.no_grad()
def collect_attention_maps(model: nn.Module, inputs: Tensor, target: str = '',
                           stage: str = 'reattention') -> List[Tensor]:
    """Run ``model`` (classifier: its ``extract_feat``; else ``model(inputs)``) in eval mode and
    return the attention map of every layer, ``[(B, H, N, N), ...]`` in depth order."""
    was_training = model.training
    model.eval()
    try:
        with record_attention_maps(model, target, stage) as maps:
            _forward_features(model, inputs)
    finally:
        model.train(was_training)
    return [m for m in maps if m is not None]


def _column_normalised(attn: Tensor, eps: float) -> Tensor:
    """Unit-norm columns ``A[..., :, t]`` (norm over queries), ``(B, H, N, T)``."""
    return attn / attn.norm(dim=-2, keepdim=True).clamp_min(eps)


def cross_layer_similarity(maps: Sequence[Tensor], eps: float = 1e-12,
                           reduce_heads: bool = False) -> Tensor:
    """DeepViT cross-layer attention similarity (Eq. 4) of one batch of maps.

    Args:
        maps: ``L`` attention maps ``(B, H, N, T)`` (queries ``N``, keys ``T``) of the same
            images, one per layer. All layers need the same shape.
        eps: floor of the column norms (an all-zero column has similarity 0).
        reduce_heads: average over heads as well.

    Returns:
        ``(L, L, H)`` (or ``(L, L)``): cosine similarity of the columns ``A^p_{h,:,t}`` and
        ``A^q_{h,:,t}``, averaged over the tokens ``t`` and the ``B`` images. Symmetric, with
        ones on the diagonal (for non-zero columns).
    """
    if len(maps) == 0:
        raise ValueError('cross_layer_similarity needs at least one attention map')
    shape = tuple(maps[0].shape)
    if len(shape) != 4:
        raise ValueError(f'attention maps must be (B, H, N, T), got {shape}')
    for i, m in enumerate(maps):
        if tuple(m.shape) != shape:
            raise ValueError(f'attention map {i} has shape {tuple(m.shape)}, layer 0 has {shape}; '
                             f'all layers must match')
    B, H, _, T = shape
    normed = [_column_normalised(m.float(), eps) for m in maps]
    num = len(normed)
    sim = normed[0].new_zeros(num, num, H)
    for p in range(num):
        for q in range(p, num):
            # sum over queries -> (B, H, T); mean over images and tokens -> (H,)
            value = (normed[p] * normed[q]).sum(dim=-2).mean(dim=(0, 2))
            sim[p, q] = value
            sim[q, p] = value
    return sim.mean(-1) if reduce_heads else sim


class SimilarityAccumulator:
    """Image-weighted running mean of :func:`cross_layer_similarity` over batches."""

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None
        self.count = 0

    def update(self, maps: Sequence[Tensor]) -> None:
        batch = maps[0].shape[0]
        sim = cross_layer_similarity(maps).cpu() * batch
        if self.total is not None and self.total.shape != sim.shape:
            raise ValueError(f'attention layers changed between batches: {tuple(sim.shape)} vs '
                             f'{tuple(self.total.shape)}')
        self.total = sim if self.total is None else self.total + sim
        self.count += batch

    def result(self, reduce_heads: bool = False) -> Tensor:
        if self.total is None:
            raise ValueError('no attention maps were accumulated')
        sim = self.total / self.count
        return sim.mean(-1) if reduce_heads else sim


@torch.no_grad()
def similarity_on_batches(model: nn.Module, batches: Iterable[Tensor], target: str = '',
                          stage: str = 'reattention') -> Tensor:
    """``(L, L, H)`` similarity averaged over all images of ``batches`` (preprocessed inputs)."""
    acc = SimilarityAccumulator()
    for inputs in batches:
        acc.update(collect_attention_maps(model, inputs, target, stage))
    return acc.result()


def format_similarity(sim: Tensor, decimals: int = 2) -> str:
    """The ``(L, L)`` (or head-averaged ``(L, L, H)``) matrix as an aligned text table."""
    if sim.dim() == 3:
        sim = sim.mean(-1)
    num = sim.shape[0]
    width = decimals + 5
    head = ' ' * 5 + ''.join(f'{q:>{width}d}' for q in range(num))
    rows = [head]
    for p in range(num):
        rows.append(f'{p:>4d} ' + ''.join(f'{float(sim[p, q]):>{width}.{decimals}f}'
                                          for q in range(num)))
    return '\n'.join(rows)


def save_similarity_heatmap(sim: Tensor, path: str, title: str = '') -> str:
    """Save the head-averaged ``(L, L)`` similarity as a heat-map PNG (matplotlib Agg)."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    if sim.dim() == 3:
        sim = sim.mean(-1)
    num = sim.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 + 0.32 * num, 1.0 + 0.3 * num), dpi=100)
    try:
        vmin = -1.0 if float(sim.min()) < 0 else 0.0  # re-generated maps can be negative
        im = ax.imshow(sim.numpy(), vmin=vmin, vmax=1.0, cmap='viridis', origin='upper')
        ax.set_xlabel('layer q')
        ax.set_ylabel('layer p')
        ticks = list(range(0, num, max(1, num // 16)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_title(title or 'cross-layer attention similarity')
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def cls_attention_grid(attn: Tensor, grid_hw: Tuple[int, int], num_extra_tokens: int = 1,
                       head: Optional[int] = None) -> Tensor:
    """Attention of the class token (query 0) to the patch tokens as ``(B, h, w)`` maps.

    ``head=None`` averages the heads. Without a class token (``num_extra_tokens=0``) the
    attention *received* by each patch (mean over queries) is shown instead.
    """
    if attn.dim() != 4:
        raise ValueError(f'attention maps must be (B, H, N, N), got {tuple(attn.shape)}')
    h, w = grid_hw
    if attn.shape[-1] != h * w + num_extra_tokens:
        raise ValueError(f'attention over {attn.shape[-1]} keys does not fit a {h}x{w} grid with '
                         f'{num_extra_tokens} extra tokens')
    maps = attn if head is None else attn[:, head:head + 1]
    if num_extra_tokens:
        rows = maps[:, :, 0, num_extra_tokens:]
    else:
        rows = maps.mean(dim=2)
    return rows.mean(dim=1).reshape(-1, h, w)


def build_model_for_analysis(cfg, checkpoint: Optional[str] = None,
                             device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in the config's default scope, load ``checkpoint`` (or keep the
    initialised weights when ``None``) and return it in eval mode on ``device``."""
    import os.path as osp

    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import mmvitreg  # noqa: F401  (registers the mmvitreg types)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    elif hasattr(model, 'init_weights'):
        import logging

        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs one line per parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    model.to(device)
    model.eval()
    return model
