"""The dense DNC memory (Graves et al. 2016): its state and the ``dnc(...)`` factory."""

from __future__ import annotations

from typing import Any, NamedTuple

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
    interface_layout,
    split_dnc_interface,
)


class DNCOptions(NamedTuple):
    """The improvements of a dense DNC beyond Graves et al. 2016 (issue 18); the defaults are the paper's.

    Attributes:
        masking: masked content addressing (Csordas & Schmidhuber 2019, Sec. 3.1;
            :func:`memfn.addressing.masked_content_weights`).
        deallocation: freed cells lose their content (Sec. 3.2; :func:`memfn.addressing.deallocated_memory`).
        link_sharpness: learned exponents on the forward/backward weightings (Sec. 3.3;
            :func:`memfn.addressing.sharpened_weights`).
        write_heads: write heads (deepmind/dnc's ``num_writes``).
    """

    masking: bool = False
    deallocation: bool = False
    link_sharpness: bool = False
    write_heads: int = 1


PLAIN = DNCOptions()


class DNCState(NamedTuple):
    """One example's dense memory state. Field names and shapes follow pytorch-dnc's hidden dict.

    The single write head keeps its own axis (as in deepmind/dnc and pytorch-dnc), so batched
    shapes equal the ``dnc`` package's: link ``[B, 1, N, N]``, write weights ``[B, 1, N]``. With
    ``write_heads=Wh`` that axis has ``Wh`` entries: one link matrix and precedence per write head.
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
    link_matrix: Tensor  # [Wh, N, N]
    precedence: Tensor  # [Wh, N]
    read_weights: Tensor  # [R, N]
    write_weights: Tensor  # [Wh, N]
    usage_vector: Tensor  # [N]


def _content(memory: Tensor, keys: Tensor, strengths: Tensor, masks: Tensor | None) -> Tensor:
    if masks is None:
        return A.content_weights(memory, keys, strengths)
    return A.masked_content_weights(memory, keys, strengths, masks)


def write(state: DNCState, io: DNCInterface, options: DNCOptions = PLAIN) -> DNCState:
    """The write half of a step: usage, allocation, write weights, erase/add, links, precedence.

    The write-head axis is dropped with ``squeeze`` rather than indexing: the backward of an index
    allocates a zero tensor of the full shape and copies into it (an N x N pass for the links).

    Where to write is decided from the previous step's read and write weights (in ``state``).
    Returns the state with ``memory``, ``usage_vector``, ``write_weights``, ``link_matrix`` and
    ``precedence`` updated; ``read_weights`` still hold the previous step's.
    """
    if options.write_heads > 1:
        return _multi_write(state, io, options)
    psi = A.retention(io.free_gates, state.read_weights)
    u = A.usage(state.usage_vector, state.write_weights.squeeze(-2), psi)
    alloc = A.allocation_weights(u)
    cw = _content(state.memory, io.write_key, io.write_strength, io.write_masks).squeeze(-2)
    ww = A.write_weights(cw, alloc, io.write_gate, io.allocation_gate)  # [N]
    old = A.deallocated_memory(state.memory, psi) if options.deallocation else state.memory
    memory = A.updated_memory(old, ww, io.erase_vector, io.write_vector)
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


def _multi_write(state: DNCState, io: DNCInterface, options: DNCOptions) -> DNCState:
    """:func:`write` with several write heads (deepmind/dnc's ``num_writes``): per-head keys, gates,
    erase and write vectors, allocation one head after another, one link matrix per head."""
    psi = A.retention(io.free_gates, state.read_weights)
    u = A.usage(state.usage_vector, A.combined_write_weights(state.write_weights), psi)
    alloc = A.multi_write_allocation_weights(u, io.allocation_gate * io.write_gate)  # [Wh, N]
    cw = _content(state.memory, io.write_key, io.write_strength, io.write_masks)  # [Wh, N]
    ww = A.write_weights(cw, alloc, io.write_gate.unsqueeze(-1), io.allocation_gate.unsqueeze(-1))  # [Wh, N]
    old = A.deallocated_memory(state.memory, psi) if options.deallocation else state.memory
    memory = A.multi_updated_memory(old, ww, io.erase_vector, io.write_vector)
    link = A.link_matrix(state.link_matrix, state.precedence, ww)
    prec = A.precedence(state.precedence, ww)
    return state._replace(memory=memory, link_matrix=link, precedence=prec, write_weights=ww, usage_vector=u)


def read(
    state: DNCState,
    read_keys: Tensor,
    read_strengths: Tensor,
    read_modes: Tensor,
    read_masks: Tensor | None = None,
    sharpness: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, DNCState]:
    """The read half of a step, from the (already written) memory and links in ``state``.

    read_keys ``[R, W]``, read_strengths ``[R]``, read_modes ``[R, 3]`` (backward, forward,
    content; ``[R, 2 Wh + 1]`` with several write heads), read_masks ``[R, W]`` (masked content
    addressing) or None, sharpness ``(forward [R], backward [R])`` exponents or None -> (read
    vectors ``[R, W]``, state with the new ``read_weights``).
    """
    cr = _content(state.memory, read_keys, read_strengths, read_masks)
    if state.link_matrix.shape[-3] > 1:
        fwd, bwd = A.multi_forward_backward_read_weights(state.link_matrix, state.read_weights)  # [R, Wh, N]
        if sharpness is not None:
            fwd = A.sharpened_weights(fwd, sharpness[0].unsqueeze(-1))
            bwd = A.sharpened_weights(bwd, sharpness[1].unsqueeze(-1))
        rw = A.multi_read_weights(cr, fwd, bwd, read_modes)
    else:
        fwd, bwd = A.forward_backward_read_weights(state.link_matrix.squeeze(-3), state.read_weights)
        if sharpness is not None:
            fwd, bwd = A.sharpened_weights(fwd, sharpness[0]), A.sharpened_weights(bwd, sharpness[1])
        rw = A.read_weights(cr, fwd, bwd, read_modes)
    return A.read_vectors(state.memory, rw), state._replace(read_weights=rw)


def dnc(
    nr_cells: int,
    cell_size: int,
    read_heads: int,
    masking: bool = False,
    deallocation: bool = False,
    link_sharpness: bool = False,
    write_heads: int = 1,
) -> Memory:
    """A dense DNC memory of ``nr_cells`` (N) cells of width ``cell_size`` (W), ``read_heads`` (R).

    Its ``step`` writes first (content + allocation addressing, erase/add, precedence and links)
    and then reads from the updated memory (content, forward and backward modes), as in the
    paper's Methods section.

    Args:
        nr_cells: memory cells (N).
        cell_size: width of a cell (W).
        read_heads: read heads (R).
        masking: content addressing with a learned mask per head on key and memory (Csordas &
            Schmidhuber 2019, Sec. 3.1); adds ``(R + Wh) * W`` interface entries.
        deallocation: the free gates also erase the content of freed cells (Sec. 3.2).
        link_sharpness: a learned exponent per read head on the forward and backward weightings
            (Sec. 3.3); adds ``2 * R`` interface entries.
        write_heads: write heads (Wh), each with its own key, strength, erase and write vectors,
            gates and link matrix (deepmind/dnc's ``num_writes``). With the defaults of these four
            options the memory is the DNC of Graves et al. 2016, with the same numbers as before the
            options existed; :mod:`memfn.interface` documents the layout each option gives.

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
    h = positive_int("write_heads", write_heads)
    options = DNCOptions(bool(masking), bool(deallocation), bool(link_sharpness), h)
    size = dnc_interface_size(r, w, h, options.masking, options.link_sharpness)

    def init(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> DNCState:
        # Zero memory and weights: the paper's initial state, and deterministic.
        z: dict[str, Any] = dict(dtype=default_dtype(dtype), device=device)
        item = torch.empty((), dtype=z["dtype"]).element_size()
        nbytes = n * (h * n + w + r + 2 * h + 1) * item
        ensure_fits(nbytes, f"a dense DNC memory of {n:,} cells (its N x N link matrix)", device)
        return DNCState(
            memory=torch.zeros(n, w, **z),
            link_matrix=torch.zeros(h, n, n, **z),
            precedence=torch.zeros(h, n, **z),
            read_weights=torch.zeros(r, n, **z),
            write_weights=torch.zeros(h, n, **z),
            usage_vector=torch.zeros(n, **z),
        )

    def step(state: DNCState, xi: Tensor) -> tuple[Tensor, DNCState]:
        check_interface(xi, size)
        io = split_dnc_interface(xi, r, w, h, options.masking, options.link_sharpness)
        state = write(state, io, options)
        sharpness = None
        if io.forward_sharpness is not None and io.backward_sharpness is not None:
            sharpness = (io.forward_sharpness, io.backward_sharpness)
        return read(state, io.read_keys, io.read_strengths, io.read_modes, io.read_masks, sharpness)

    fields = interface_layout(r, w, h, options.masking, options.link_sharpness)
    return checked_memory(init, step, size, r * w, fields, config=options if options != PLAIN else None)
