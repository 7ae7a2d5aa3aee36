"""Hidden-state helpers of the shells: detach or copy one (any nesting), check one leaf."""

from __future__ import annotations

from typing import Any

import optree
from torch import Tensor

from memfn._donation import was_donated


def detach(hidden: Any) -> Any:
    """Detach every tensor of a hidden state (any nesting), e.g. between truncated-BPTT chunks.

    Examples:
        >>> rnn = memfn.DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3)
        >>> out, hidden = rnn(torch.randn(2, 6, 4))
        >>> out, hidden = rnn(torch.randn(2, 6, 4), memfn.detach(hidden))  # truncated BPTT: no gradient back
        >>> hidden[1]["memory"].requires_grad, memfn.detach(hidden)[1]["memory"].requires_grad
        (True, False)
    """
    return optree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


def clone(hidden: Any) -> Any:
    """Copy every tensor of a hidden state (any nesting): a state to reuse after passing it to a
    SAM/SDNC fast-path call, which consumes the buffers it is given.

    Examples:
        >>> rnn = memfn.SAM(input_size=4, hidden_size=8, nr_cells=64, cell_size=4, read_heads=1)
        >>> _, hidden = rnn(torch.randn(2, 3, 4))
        >>> kept = memfn.clone(hidden)
        >>> _, new = rnn(torch.randn(2, 3, 4), hidden)  # consumes hidden (fast path)
        >>> _, again = rnn(torch.randn(2, 3, 4), kept)  # the copy is still usable
    """
    return optree.tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


def checked_leaf(name: str, value: Any, expected: Tensor) -> Tensor:
    """The hidden-state leaf ``name`` checked against its zero ``expected`` and converted to its dtype."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if was_donated(value):
        raise ValueError(
            f"{name} was consumed by an earlier forward call: the SAM/SDNC fast path updates the memory in "
            "place and takes over the buffers of the state passed in (like JAX buffer donation). Pass "
            "memfn.clone(hidden) to keep a state you want to reuse, or build the module with fast=False"
        )
    if value.shape != expected.shape:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}, expected {tuple(expected.shape)} "
            "(from the input's batch size and this module's configuration)"
        )
    return value.to(expected.dtype)


__all__ = ["checked_leaf", "clone", "detach"]
