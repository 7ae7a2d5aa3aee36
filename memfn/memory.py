"""What every memory is: a pair of pure functions closed over a frozen config (optax style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor


class Memory(NamedTuple):
    """A memory: ``init`` builds one example's state, ``step`` advances it by one time step.

    - ``init(dtype=torch.float32, device=None) -> state``: a NamedTuple of tensors, no batch axis.
    - ``step(state, xi) -> (read_vectors [R, W], new_state)``: pure; never mutates ``state``.
      ``xi`` is the flat interface vector ``[interface_size]``.
    - ``interface_size``: length of ``xi``; ``read_size``: ``R * W``, the flattened read vectors.
    - ``interface_fields``: ``(name, length)`` of each field of ``xi`` in order (used to build one
      linear per field, pytorch-dnc's ``independent_linears``); may be empty for custom memories.

    ``step`` and the functions it is made of also broadcast over leading batch axes, so it can be
    called on a batched state directly; ``torch.func.vmap(step)`` gives the same result.
    """

    init: Callable[..., Any]
    step: Callable[[Any, Tensor], tuple[Tensor, Any]]
    interface_size: int
    read_size: int
    interface_fields: tuple[tuple[str, int], ...] = ()


def default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype
