"""Debug views: what pytorch-dnc's ``debug=True`` dictionaries show, read from memory states.

A *view* is a dict of one example's tensors (no batch axis) named by pytorch-dnc's debug keys;
:func:`memfn.compat.debug_record` lays a sequence of views out the way each release does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import optree
from torch import Tensor

from memfn import compat
from memfn.sparse import addressing as S
from memfn.sparse import usage

View = Callable[[Any], dict[str, Tensor]]
T = TypeVar("T")


def fields_view(state: Any) -> dict[str, Tensor]:
    """The state's own fields (the DNC's debug keys are its state's fields)."""
    return cast(dict[str, Tensor], state._asdict())


def sparse_view(state: Any) -> dict[str, Tensor]:
    """pytorch-dnc's SAM/SDNC debug keys for one example (weightings dense over the N cells), then memfn's."""
    n = state.memory.shape[-2]
    visible = S.gather_rows(state.memory, state.read_positions)  # [R, P, W]
    view = {
        "memory": state.memory,
        "visible_memory": visible,
        "read_weights": S.dense_weights(state.read_positions, state.read_weights, n),
        "write_weights": S.dense_weights(state.write_positions, state.write_weights, n),
        "read_vectors": S.sparse_read_vectors(visible, state.read_weights),  # [R, W]
        "least_used_mem": S.least_recently_used(state.last_access).unsqueeze(-1),  # [1]: next step's erase
        "usage": usage(state),
        "read_positions": state.read_positions,
    }
    if hasattr(state, "link_matrix"):
        view.update(
            link_matrix=state.link_matrix,  # [N, L]: the kept entries of each row, as in pytorch-dnc
            rev_link_matrix=state.rev_link_matrix,
            precedence=S.dense_weights(state.precedence_positions, state.precedence, n),
            link_positions=state.link_positions,  # memfn's: the columns of those entries
            rev_link_positions=state.rev_link_positions,
        )
    return view


def padded(trace: list[T], length: int, num_layers: int, share_memory: bool) -> list[T]:
    """The trace of a packed batch with element 0's steps past its ``length`` showing its final state.

    The trace holds each step's states before padded steps are masked out, so past that length it
    shows what the step computed on padding; element 0 really keeps its last state."""
    end = length * num_layers
    final = [trace[end - 1 if share_memory else end - num_layers + layer] for layer in range(num_layers)]
    return trace[:end] + [final[i % num_layers] for i in range(end, len(trace))]


def debug_record(trace: Sequence[Any], view: View, keys: Sequence[str], api: str) -> dict[str, Any]:
    """pytorch-dnc's debug dictionary from a trace of batched memory states, one per (time, layer):
    batch element 0's ``view``, restricted to ``keys``, in ``api``'s layout."""
    views = []
    for state in trace:
        full = view(optree.tree_map(lambda t: t[0].detach(), state))
        views.append({key: full[key] for key in keys})
    return compat.debug_record(views, keys, api)


def network_record(trace: list[Any], lengths: Tensor | None, network: Any) -> dict[str, Any]:
    """The ``debug=True`` dictionary of a shell ``network``'s forward call from its ``trace``
    (:func:`padded` first where the input was packed with ``lengths``)."""
    if lengths is not None:
        trace = padded(trace, int(lengths[0]), network.num_layers, network.share_memory)
    return debug_record(trace, network.debug_view, network.debug_keys, network.api)


__all__ = ["debug_record", "fields_view", "network_record", "padded", "sparse_view"]
