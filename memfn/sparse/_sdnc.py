"""Sparse DNC (SDNC, Rae et al. 2016): SAM plus temporal links kept L-sparse, and the ``sdnc(...)`` factory.

The dense link matrix ``L_t[i, j]`` (how strongly cell ``i`` was written right after cell ``j``)
follows the DNC recursion ``L_t = D o L_{t-1} + w p_{t-1}^T`` with ``D[i, j] = 1 - w[i] - w[j]``
and a zero diagonal. The SDNC keeps two L-sparse views of it, each with the ``L`` largest entries
per row:

- ``link_matrix`` / ``link_positions`` ``[N, L]``: rows of ``L_t`` (row ``i`` lists cells written
  just before ``i``), used by backward reads ``b = L^T w^r``;
- ``rev_link_matrix`` / ``rev_link_positions`` ``[N, L]``: rows of ``L_t^T`` (row ``j`` lists the
  cells written just after ``j``), used by forward reads ``f = L w^r``.

Because ``w`` and ``p`` are sparse, a step changes O(S) rows of each view (``S`` write slots),
found without an ``N``-sized pass. With ``L = N`` nothing is truncated and the views equal the
dense recursion (tested). With ``L < N`` each view is an approximation of its own: a row that
links to a rewritten cell is found through the other view, so an entry the other view dropped
misses that step's decay, and the two views can differ slightly on entries both keep. As in the
paper, no gradient passes through the sparse link matrices or the precedence; reads are
differentiable in the previous read weights and the read modes.

Interface ``xi``: SAM's fields, then read modes ``3 * R`` (softmax over backward, forward, content);
with ``link_sharpness=True`` (issue 18) then forward and backward sharpness ``R`` each (oneplus);
with ``masking=True`` then read masks ``R * W`` (sigmoid), last.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from memfn._donation import check_not_consumed
from memfn._memory import Memory, checked_memory, default_dtype
from memfn._resources import ensure_fits, zeros
from memfn._validation import positive_int
from memfn.interface import NUM_READ_MODES, check_interface, interface_parts
from memfn.numerics import oneplus
from memfn.sparse._sam import (
    SparseConfig,
    _sparse_reads,
    carried,
    initial_sparse_state,
    mask_fields,
    sam_interface,
    sam_interface_fields,
)
from memfn.sparse._step import PureRows, StepConfig, sparse_step
from memfn.sparse.knn import knn_config


class SDNCState(NamedTuple):
    """One example's SDNC state: the fields of :class:`~memfn.sparse.SAMState` (the same meaning and
    shapes), then the sparse links and precedence.

    Read slots per head ``P = 2L + K`` (backward, forward, content); ``S = R * P + 1`` write slots.

    Attributes:
        link_matrix: ``[N, L]``, the kept values of each row of the forward links ``L_t``.
        link_positions: ``[N, L]`` int64, their columns.
        rev_link_matrix: ``[N, L]``, the kept values of each row of ``L_t^T`` (backward links).
        rev_link_positions: ``[N, L]`` int64, their columns.
        precedence: ``[L]``, the kept precedence weights.
        precedence_positions: ``[L]`` int64, their cells.

    Examples:
        >>> state = memfn.sdnc(nr_cells=64, cell_size=8, read_heads=2, sparse_reads=4, temporal_reads=2).init()
        >>> state.read_positions.shape, state.link_matrix.shape  # P = 2 * 2 + 4
        (torch.Size([2, 8]), torch.Size([64, 2]))
    """

    memory: Tensor  # [N, W]
    read_positions: Tensor  # [R, P] int64
    read_weights: Tensor  # [R, P]
    write_positions: Tensor  # [S] int64
    write_weights: Tensor  # [S]
    last_access: Tensor  # [N] int64
    time: Tensor  # [] int64
    link_matrix: Tensor  # [N, L] values of L_t's rows
    link_positions: Tensor  # [N, L] int64 their columns
    rev_link_matrix: Tensor  # [N, L] values of L_t^T's rows
    rev_link_positions: Tensor  # [N, L] int64
    precedence: Tensor  # [L]
    precedence_positions: Tensor  # [L] int64


def sdnc_interface_fields(
    read_heads: int, cell_size: int, masking: bool = False, link_sharpness: bool = False
) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of each interface field: SAM's, then ``read_modes`` ``3 * R``, then the
    options' fields: ``forward_sharpness`` and ``backward_sharpness`` ``R`` each, ``read_masks`` ``R * W``.

    Examples:
        >>> [name for name, _ in memfn.sparse.sdnc_interface_fields(2, 3, masking=True, link_sharpness=True)][-4:]
        ['read_modes', 'forward_sharpness', 'backward_sharpness', 'read_masks']
    """
    r = read_heads
    sharpness = (("forward_sharpness", r), ("backward_sharpness", r)) if link_sharpness else ()
    return (sam_interface_fields(r, cell_size) + (("read_modes", NUM_READ_MODES * r),) + sharpness
            + mask_fields(r, cell_size, masking))  # fmt: skip


class SDNCInterface(NamedTuple):
    """The parsed, activated interface of one SDNC step: SAM's fields, then the read modes."""

    read_keys: Tensor  # [R, W]
    read_strengths: Tensor  # [R]
    write_vector: Tensor  # [W]
    interpolation_gate: Tensor  # [1]
    write_gate: Tensor  # [1]
    read_modes: Tensor  # [R, 3] softmax over (backward, forward, content)
    read_masks: Tensor | None = None  # [R, W] in [0, 1] with masking, else None
    forward_sharpness: Tensor | None = None  # [R] >= 1 with link_sharpness, else None
    backward_sharpness: Tensor | None = None  # [R] >= 1 with link_sharpness, else None


def split_sdnc_interface(
    xi: Tensor, read_heads: int, cell_size: int, masking: bool = False, link_sharpness: bool = False
) -> SDNCInterface:
    """Split and activate ``xi`` ``[..., interface_size]`` into an :class:`SDNCInterface`.

    Examples:
        >>> mem = memfn.sdnc(nr_cells=8, cell_size=3, read_heads=2, link_sharpness=True)
        >>> io = memfn.sparse.split_sdnc_interface(torch.zeros(mem.interface_size), 2, 3, link_sharpness=True)
        >>> io.read_modes.shape, io.forward_sharpness, io.read_masks  # oneplus(0) = 1 + log 2
        (torch.Size([2, 3]), tensor([1.6931, 1.6931]), None)
    """
    r = read_heads
    parts = interface_parts(xi, sdnc_interface_fields(r, cell_size, masking, link_sharpness))
    modes = parts["read_modes"].unflatten(-1, (r, NUM_READ_MODES))
    sharpness = {name: oneplus(parts[name]) for name in ("forward_sharpness", "backward_sharpness") if name in parts}
    base = sam_interface(parts, r, cell_size)
    return SDNCInterface(*base[:5], read_modes=torch.softmax(modes, dim=-1), read_masks=base.read_masks, **sharpness)


def sharpness_exponents(io: SDNCInterface) -> tuple[Tensor, Tensor] | None:
    """``(forward [R], backward [R])`` link sharpness exponents of ``io``, or None without ``link_sharpness``."""
    if io.forward_sharpness is None or io.backward_sharpness is None:
        return None
    return io.forward_sharpness, io.backward_sharpness


def sdnc(
    nr_cells: int,
    cell_size: int,
    read_heads: int,
    sparse_reads: int = 4,
    temporal_reads: int = 4,
    knn: str = "auto",
    index: str = "flat",
    num_lists: int | None = None,
    index_checks: int | None = None,
    masking: bool = False,
    link_sharpness: bool = False,
) -> Memory:
    """An SDNC memory: SAM with ``temporal_reads`` (L) forward and L backward reads per head
    through links kept L-sparse per row.

    ``link_sharpness=True`` raises each head's kept forward and backward weightings to a learned
    power and renormalises them to their mass (Csordas & Schmidhuber 2019, Sec. 3.3;
    :func:`memfn.addressing.sharpened_weights`); exponent 1 is the plain SDNC. ``masking=True``
    masks the content reads as :func:`memfn.sam` does, with the same approximation (the candidates
    come from a search over unmasked rows). The dense DNC's de-allocation and several write heads
    do not apply (no free gates; one write per step).

    Args:
        nr_cells: memory cells (N).
        cell_size: width of a cell (W).
        read_heads: read heads (R).
        sparse_reads: cells each head reads by content (K).
        temporal_reads: links kept per row, and cells read forward and backward per head (L).
        knn: as :func:`memfn.sam`.
        index: as :func:`memfn.sam`.
        num_lists: as :func:`memfn.sam`.
        index_checks: as :func:`memfn.sam`.
        masking: masked content reads, as :func:`memfn.sam`; adds ``R * W`` interface entries, last.
        link_sharpness: learned sharpness of the forward and backward reads; adds ``2 * R``
            interface entries after the read modes.

    Returns:
        A :class:`~memfn._memory.Memory` whose state is an :class:`SDNCState`; ``step(state, xi)``
            returns the reads ``[R, W]`` and the new state.

    Examples:
        >>> mem = sdnc(nr_cells=32, cell_size=8, read_heads=2, sparse_reads=4, temporal_reads=2)
        >>> reads, state = mem.step(mem.init(), torch.zeros(mem.interface_size))
        >>> tuple(reads.shape), tuple(state.read_positions.shape), tuple(state.link_matrix.shape)
        ((2, 8), (2, 8), (32, 2))
    """
    n, w, r = (positive_int(k, v) for k, v in (("nr_cells", nr_cells), ("cell_size", cell_size),
                                               ("read_heads", read_heads)))  # fmt: skip
    k = _sparse_reads(sparse_reads, n)
    kept = positive_int("temporal_reads", temporal_reads)
    if kept > n:
        raise ValueError(f"temporal_reads must be in [1, nr_cells={n}], got {kept}")
    search = knn_config(n, knn, index, num_lists, index_checks)
    masking, link_sharpness = bool(masking), bool(link_sharpness)
    fields = sdnc_interface_fields(r, w, masking, link_sharpness)
    size = sum(length for _, length in fields)

    def init(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SDNCState:
        dtype = default_dtype(dtype)
        item = torch.empty((), dtype=dtype).element_size()
        # The memory and stamps (checked again below) plus the two link views: values and positions.
        ensure_fits(n * (w * item + 8 + 2 * kept * (item + 8)), f"an SDNC memory of {n:,} cells ({dtype})", device)
        base = initial_sparse_state(n, w, r, 2 * kept + k, dtype, device)

        def empty(dtype: torch.dtype) -> Tensor:  # empty link slots: value 0 (their cell does not matter)
            return zeros(n, kept, dtype=dtype, device=device)

        return SDNCState(
            *base, link_matrix=empty(dtype), link_positions=empty(torch.long), rev_link_matrix=empty(dtype),
            rev_link_positions=empty(torch.long), precedence=torch.zeros(kept, dtype=dtype, device=device),
            precedence_positions=torch.zeros(kept, dtype=torch.long, device=device),
        )  # fmt: skip

    def step(state: SDNCState, xi: Tensor) -> tuple[Tensor, SDNCState]:
        check_interface(xi, size)
        io = split_sdnc_interface(xi, r, w, masking, link_sharpness)
        views = (state.link_positions, state.link_matrix, state.rev_link_positions, state.rev_link_matrix)
        rows = PureRows(state.memory, state.last_access, views, search)
        reads, c = sparse_step(
            rows, carried(state), *io[:6], StepConfig(k, kept), io.read_masks, sharpness_exponents(io)
        )
        link_pos, link_val, rev_pos, rev_val = rows.links()
        return reads, SDNCState(
            rows.memory, c.read_positions, c.read_weights, c.write_positions, c.write_weights, rows.last_access,
            c.time, link_val, link_pos, rev_val, rev_pos, c.precedence, c.precedence_positions,
        )  # fmt: skip

    config = SparseConfig(n, w, r, k, kept, search, size, masking, link_sharpness)
    return checked_memory(init, step, size, r * w, fields, config, check_not_consumed)


__all__ = ["SDNCInterface", "SDNCState", "sdnc", "sdnc_interface_fields", "split_sdnc_interface"]
