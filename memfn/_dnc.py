"""The dense DNC memory (Graves et al. 2016): its state and the ``dnc(...)`` factory."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from memfn import addressing as A
from memfn._memory import Memory, checked_memory, default_dtype
from memfn._resources import ensure_fits
from memfn._validation import positive_int
from memfn.interface import (
    DNCInterface,
    check_interface,
    dnc_interface_size,
    interface_field_sizes,
    split_dnc_interface,
)


class DNCState(NamedTuple):
    """One example's dense memory state. Field names and shapes follow pytorch-dnc's hidden dict.

    The single write head keeps its own axis (as in deepmind/dnc and pytorch-dnc), so batched
    shapes equal the ``dnc`` package's: link ``[B, 1, N, N]``, write weights ``[B, 1, N]``.
    The shells hand it to users as a plain dict with these keys, in this order (:mod:`memfn.compat`).

    Attributes:
        memory: ``[N, W]``, the cells.
        link_matrix: ``[1, N, N]``; ``[0, i, j]``: how much cell ``i`` was written right after cell ``j``.
        precedence: ``[1, N]``, how much each cell was the last one written.
        read_weights: ``[R, N]``, each head's last read weighting.
        write_weights: ``[1, N]``, the last write weighting.
        usage_vector: ``[N]``, usage in ``[0, 1]``.

    Examples:
        >>> state = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2).init()
        >>> {name: tuple(t.shape) for name, t in state._asdict().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'memory': (16, 8), 'link_matrix': (1, 16, 16), 'precedence': (1, 16), 'read_weights': (2, 16),
         'write_weights': (1, 16), 'usage_vector': (16,)}
    """

    memory: Tensor  # [N, W]
    link_matrix: Tensor  # [1, N, N]
    precedence: Tensor  # [1, N]
    read_weights: Tensor  # [R, N]
    write_weights: Tensor  # [1, N]
    usage_vector: Tensor  # [N]


def write(state: DNCState, io: DNCInterface) -> DNCState:
    """The write half of a step: usage, allocation, write weights, erase/add, links, precedence.

    The write-head axis is dropped with ``squeeze`` rather than indexing: the backward of an index
    allocates a zero tensor of the full shape and copies into it (an N x N pass for the links).

    Where to write is decided from the previous step's read and write weights (in ``state``).
    Returns the state with ``memory``, ``usage_vector``, ``write_weights``, ``link_matrix`` and
    ``precedence`` updated; ``read_weights`` still hold the previous step's.
    """
    psi = A.retention(io.free_gates, state.read_weights)
    u = A.usage(state.usage_vector, state.write_weights.squeeze(-2), psi)
    alloc = A.allocation_weights(u)
    cw = A.content_weights(state.memory, io.write_key, io.write_strength).squeeze(-2)
    ww = A.write_weights(cw, alloc, io.write_gate, io.allocation_gate)  # [N]
    memory = A.updated_memory(state.memory, ww, io.erase_vector, io.write_vector)
    # Links use the precedence from *before* this write.
    link = A.link_matrix(state.link_matrix.squeeze(-3), state.precedence.squeeze(-2), ww)
    prec = A.precedence(state.precedence.squeeze(-2), ww)
    return state._replace(
        memory=memory,
        link_matrix=link.unsqueeze(-3),
        precedence=prec.unsqueeze(-2),
        write_weights=ww.unsqueeze(-2),
        usage_vector=u,
    )


def read(state: DNCState, read_keys: Tensor, read_strengths: Tensor, read_modes: Tensor) -> tuple[Tensor, DNCState]:
    """The read half of a step, from the (already written) memory and links in ``state``.

    read_keys ``[R, W]``, read_strengths ``[R]``, read_modes ``[R, 3]`` (backward, forward,
    content) -> (read vectors ``[R, W]``, state with the new ``read_weights``).
    """
    link = state.link_matrix.squeeze(-3)
    cr = A.content_weights(state.memory, read_keys, read_strengths)
    fwd, bwd = A.forward_backward_read_weights(link, state.read_weights)
    rw = A.read_weights(cr, fwd, bwd, read_modes)
    return A.read_vectors(state.memory, rw), state._replace(read_weights=rw)


def dnc(nr_cells: int, cell_size: int, read_heads: int) -> Memory:
    """A dense DNC memory of ``nr_cells`` (N) cells of width ``cell_size`` (W), ``read_heads`` (R).

    Its ``step`` writes first (content + allocation addressing, erase/add, precedence and links)
    and then reads from the updated memory (content, forward and backward modes), as in the
    paper's Methods section.

    Args:
        nr_cells: memory cells (N).
        cell_size: width of a cell (W).
        read_heads: read heads (R).

    Returns:
        A :class:`~memfn._memory.Memory` whose state is a :class:`DNCState`; ``step(state, xi)`` with
            ``xi`` ``[interface_size]`` (:func:`memfn.split_dnc_interface` gives its layout) returns
            the reads ``[R, W]`` and the new state.

    Examples:
        >>> mem = dnc(nr_cells=16, cell_size=8, read_heads=2)
        >>> state = mem.init()
        >>> reads, state = mem.step(state, torch.zeros(mem.interface_size))
        >>> tuple(reads.shape)
        (2, 8)
    """
    n = positive_int("nr_cells", nr_cells)
    w = positive_int("cell_size", cell_size)
    r = positive_int("read_heads", read_heads)
    size = dnc_interface_size(r, w)

    def init(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> DNCState:
        # Zero memory and weights: the paper's initial state, and deterministic.
        z = dict(dtype=default_dtype(dtype), device=device)
        item = torch.empty((), dtype=z["dtype"]).element_size()
        ensure_fits(n * (n + w + r + 3) * item, f"a dense DNC memory of {n:,} cells (its N x N link matrix)", device)
        return DNCState(
            memory=torch.zeros(n, w, **z),
            link_matrix=torch.zeros(1, n, n, **z),
            precedence=torch.zeros(1, n, **z),
            read_weights=torch.zeros(r, n, **z),
            write_weights=torch.zeros(1, n, **z),
            usage_vector=torch.zeros(n, **z),
        )

    def step(state: DNCState, xi: Tensor) -> tuple[Tensor, DNCState]:
        check_interface(xi, size)
        io = split_dnc_interface(xi, r, w)
        state = write(state, io)
        return read(state, io.read_keys, io.read_strengths, io.read_modes)

    fields = tuple(zip(DNCInterface._fields, interface_field_sizes(r, w)))
    return checked_memory(init, step, size, r * w, fields)
