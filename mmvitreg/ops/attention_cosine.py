"""DeepViT cosine-similarity regularizer on attention maps across layers: functional core.

Zhou et al., "DeepViT: Towards Deeper Vision Transformer", 2021; official code
``zhoudaquan/dvit_repo``: ``SoftTargetCrossEntropyCosReg`` (``loss/cross_entropy.py``), switched on
by ``cos_reg_component`` (12 in ``scripts/DeepViT_32B_pure_transformer.yaml``, 0 elsewhere). The
official loss is the soft-target cross-entropy plus

    L_cos = w / n * sum_{i=0}^{n-1} mean_{b, q, k} cos_h(A_i[b, :, q, k], A_{i+1}[b, :, q, k])

with ``n = cos_reg_component``, ``w = 0.1`` and ``cos_h`` the cosine similarity over the **head**
axis (``torch.nn.CosineSimilarity(dim=1)`` on ``(B, H, N, N)`` maps, eps 1e-8): for every image,
query and key the vector of the ``H`` heads' weights in block ``i`` is compared with block
``i + 1``, and the ``B * N * N`` similarities are averaged. ``A_i`` is what block ``i`` multiplies
with ``V`` (``attn_next`` of the official ``ReAttention`` / ``Attention``): the softmax map after
attention dropout and, in re-attention blocks, after the head mixing and its BatchNorm
(``var_norm(reatten_matrix(attn)) * reatten_scale``); class token included; blocks in forward
order from the first, so only blocks ``0..n`` are used. Minimising it pushes consecutive layers'
attention apart (against attention collapse). The official model returns the maps only in
training mode; the term is a training loss.

Only the tensor maths lives here; attaching it to a host is the ``Regularized`` glue's job.
"""
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ['attention_cosine_loss', 'OFFICIAL_WEIGHT']

#: the constant factor of the official loss (``0.1 * cos_loss.mean() / n_comn``)
OFFICIAL_WEIGHT = 0.1


def attention_cosine_loss(attn_maps: Sequence[Tensor],
                          component: int,
                          weight: float = OFFICIAL_WEIGHT,
                          eps: float = 1e-8) -> Tensor:
    """``weight / component * sum_i mean(cos_heads(A_i, A_{i+1}))`` for ``i < component``.

    Args:
        attn_maps: per-block attention maps ``(B, H, N, N)`` (any ``(B, H, ...)`` shape works) in
            forward order; at least ``component + 1`` of them.
        component: official ``cos_reg_component`` (``n_comn``): number of consecutive pairs,
            starting at the first block (>= 1).
        weight: factor of the term (official constant 0.1).
        eps: ``CosineSimilarity`` epsilon (official default 1e-8).

    Returns:
        a scalar tensor (a loss to add to the task loss).
    """
    if isinstance(component, bool) or int(component) != component or component < 1:
        raise ValueError(f'attention_cosine component must be an integer >= 1, got {component!r}')
    component = int(component)
    if weight < 0:
        raise ValueError(f'attention_cosine weight must be >= 0, got {weight}')
    if len(attn_maps) < component + 1:
        raise ValueError(f'attention_cosine component={component} compares blocks 0..{component} '
                         f'but only {len(attn_maps)} attention maps were given')
    first = attn_maps[0]
    if first.dim() < 2:
        raise ValueError('attention_cosine expects (B, H, ...) attention maps, got shape '
                         f'{tuple(first.shape)}')
    total = first.new_zeros(())
    for i in range(component):
        a, b = attn_maps[i], attn_maps[i + 1]
        if a.shape != b.shape:
            raise ValueError(f'attention_cosine maps {i} and {i + 1} differ in shape: '
                             f'{tuple(a.shape)} vs {tuple(b.shape)}')
        total = total + F.cosine_similarity(a, b, dim=1, eps=eps).mean()
    return total * (weight / component)

