"""Numerically safe primitives shared by every memory.

All functions broadcast over leading dimensions, so they act on one example (as the pure core
expects) and equally on a batch, which lets the eager shells skip ``vmap``'s overhead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Added inside the norms of the cosine similarity. An all-zero memory row (the initial state)
#: would otherwise give 0/0 in the value and an infinite gradient of ``sqrt`` at 0.
COSINE_EPS = 1e-6


def oneplus(x: Tensor) -> Tensor:
    """``1 + softplus(x)``: the DNC's map onto strengths in ``[1, inf)``.

    Examples:
        >>> memfn.oneplus(torch.tensor([-100.0, 0.0]))
        tensor([1.0000, 1.6931])
    """
    return 1.0 + F.softplus(x)


def cosine_similarity(keys: Tensor, memory: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """Cosine similarity of every key with every memory row.

    keys ``[..., H, W]``, memory ``[..., N, W]`` -> ``[..., H, N]``.

    ``eps`` sits *inside* the square roots, so both the value and the gradient are finite for
    zero keys and zero rows (putting it only in the denominator leaves ``d sqrt(0)`` infinite).

    Examples:
        >>> keys, memory = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])
        >>> memfn.cosine_similarity(keys, memory).round(decimals=3)
        tensor([[1., 0.]])
    """
    dot = keys @ memory.transpose(-1, -2)
    key_norm = torch.sqrt((keys * keys).sum(-1) + eps)  # [..., H]
    row_norm = torch.sqrt((memory * memory).sum(-1) + eps)  # [..., N]
    return dot / (key_norm.unsqueeze(-1) * row_norm.unsqueeze(-2))


def masked_cosine_similarity(keys: Tensor, rows: Tensor, masks: Tensor) -> Tensor:
    """Cosine similarity of each key with rows, both multiplied by the key's mask: ``cos(k_h o m_h, M_h[i] o m_h)``.

    keys ``[..., H, W]``, rows ``[..., H, N, W]`` (each key's own rows: a sparse head's candidates)
    or ``[..., 1, N, W]`` (one memory for every key), masks ``[..., H, W]`` in ``[0, 1]`` -> ``[..., H, N]``.
    Csordas & Schmidhuber 2019, Sec. 3.1 (Eq. 2); the one masked formula of the dense and the sparse
    content reads. An all-ones mask gives :func:`cosine_similarity` bit for bit.

    Examples:
        >>> rows = torch.tensor([[[1.0, 5.0], [1.0, -5.0]]])  # one memory: same key part, other values
        >>> memfn.numerics.masked_cosine_similarity(torch.tensor([[1.0, 0.0]]), rows, torch.tensor([[1.0, 0.0]]))
        tensor([[1.0000, 1.0000]])
    """
    masked_rows = rows * masks.unsqueeze(-2)  # [..., H, N, W]
    return cosine_similarity((keys * masks).unsqueeze(-2), masked_rows).squeeze(-2)


def weighted_softmax(scores: Tensor, strengths: Tensor) -> Tensor:
    """``softmax(strength * scores)`` over the last axis.

    scores ``[..., H, N]``, strengths ``[..., H]`` -> ``[..., H, N]``.

    Examples:
        >>> memfn.weighted_softmax(torch.tensor([[0.0, 1.0]]), torch.tensor([0.0]))  # strength 0: uniform
        tensor([[0.5000, 0.5000]])
    """
    return torch.softmax(scores * strengths.unsqueeze(-1), dim=-1)


def exclusive_cumprod(x: Tensor) -> Tensor:
    """``out[..., j] = prod_{i<j} x[..., i]`` (so ``out[..., 0] = 1``).

    Built by shifting before the product rather than dividing after it, which would be 0/0
    wherever ``x`` has a zero.

    Examples:
        >>> memfn.exclusive_cumprod(torch.tensor([2.0, 3.0, 0.0, 4.0]))
        tensor([1., 2., 6., 0.])
    """
    shifted = torch.cat([torch.ones_like(x[..., :1]), x[..., :-1]], dim=-1)
    return torch.cumprod(shifted, dim=-1)


__all__ = [
    "COSINE_EPS",
    "cosine_similarity",
    "exclusive_cumprod",
    "masked_cosine_similarity",
    "oneplus",
    "weighted_softmax",
]
