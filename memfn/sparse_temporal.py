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

Interface ``xi``: SAM's fields, then read modes ``3 * R`` (softmax over backward, forward, content).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from memfn import sparse_addressing as S
from memfn.donation import check_not_consumed
from memfn.interface import BACKWARD, CONTENT, FORWARD, NUM_READ_MODES, check_interface
from memfn.knn import knn_config
from memfn.memory import Memory, checked_memory, default_dtype, ensure_fits, zeros
from memfn.sparse import (
    SparseConfig,
    _sparse_reads,
    content_read,
    finish_step,
    initial_sparse_state,
    sam_interface_fields,
    sparse_write,
    split_sam_interface,
)
from memfn.validation import positive_int


class SDNCState(NamedTuple):
    """One example's SDNC state: SAM's fields plus the sparse links and precedence.

    Read slots per head ``P = 2L + K`` (backward, forward, content); ``S = R * P + 1`` write slots.

    Attributes:
        memory: ``[N, W]``, the cells.
        read_positions: ``[R, P]`` int64, the cells each head read.
        read_weights: ``[R, P]``, the weights of those reads.
        write_positions: ``[S]`` int64, the cells of the last write.
        write_weights: ``[S]``, its weights.
        last_access: ``[N]`` int64, the step of each cell's last non-negligible access (0: never).
        time: ``[]`` int64, steps taken.
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


def _write_weight_at(cells: Tensor, write_positions: Tensor, write_weights: Tensor) -> Tensor:
    """``w[cells]`` for a ``[..., M, X]`` block of cell indices (the dense write weighting, sparsely)."""
    flat = S.weights_at(cells.flatten(-2), write_positions, write_weights)
    return flat.reshape(cells.shape)


def sparse_precedence(
    prev_positions: Tensor, prev_precedence: Tensor, write_positions: Tensor, write_weights: Tensor, keep: int
) -> tuple[Tensor, Tensor]:
    """``p_t = (1 - sum_i w[i]) p_{t-1} + w``, then the ``keep`` largest entries: ``(positions, values)`` ``[L]``."""
    decay = 1.0 - write_weights.sum(-1, keepdim=True)
    positions = torch.cat([prev_positions, write_positions], -1)
    values = torch.cat([decay * prev_precedence, write_weights], -1)
    return S.top_slots(positions, values, keep)


def sparse_link_rows(positions: Tensor, values: Tensor, *update: Tensor) -> tuple[Tensor, Tensor]:
    """One L-sparse view of ``L' = D o L + a b^T`` (``D[i, j] = 1 - w[i] - w[j]``, zero diagonal).

    ``update`` holds the remaining arguments of :func:`link_row_updates`, in its order.
    positions/values ``[N, L]``: this view; other_positions ``[N, L]``: the transposed view (used to
    find the rows holding an entry in a written column); rows ``[U]``: the rows to rebuild (the
    support of ``a`` and of ``w``); ``a`` = (row_positions, row_weights), ``b`` = (col_positions,
    col_weights), ``w`` = (write_positions, write_weights), all sparse. Returns the new view.

    For the rows view ``a = w, b = p_{t-1}``; for the transposed view ``a = p_{t-1}, b = w``.
    """
    return apply_link_row_updates(positions, values, link_row_updates(positions, values, *update))


class LinkRowUpdate(NamedTuple):
    """The rows of one sparse link view that a step changes (see :func:`sparse_link_rows`)."""

    decaying: Tensor  # [S * L] rows that only decay
    decayed: Tensor  # [S * L, L] their new values (same positions)
    rows: Tensor  # [U] rows rebuilt
    cells: Tensor  # [U, L] their new positions
    values: Tensor  # [U, L] and values


def link_row_updates(
    positions: Tensor,
    values: Tensor,
    other_positions: Tensor,
    rows: Tensor,
    row_positions: Tensor,
    row_weights: Tensor,
    col_positions: Tensor,
    col_weights: Tensor,
    write_positions: Tensor,
    write_weights: Tensor,
) -> LinkRowUpdate:
    """The changed rows of :func:`sparse_link_rows`, computed from the view before the step, so they
    can be applied out of place (pure) or in place (the fast path) with the same result."""
    keep = positions.shape[-1]

    def decay(row_cells: Tensor, entry_cells: Tensor) -> Tensor:  # D at (row, entry), clamped at 0
        w_row = S.weights_at(row_cells, write_positions, write_weights).unsqueeze(-1)
        w_entry = _write_weight_at(entry_cells, write_positions, write_weights)
        return (1.0 - w_row - w_entry).clamp(min=0.0)

    # 1. Rows that link to a written cell j (found through the other view's row j) only decay.
    decaying = S.gather_rows(other_positions, write_positions).flatten(-2)  # [S * L]
    decayed = S.gather_rows(values, decaying) * decay(decaying, S.gather_rows(positions, decaying))
    # 2. Rows in the support of a or w: decay, add a[i] b^T, zero the diagonal, keep the L largest.
    old_cells = S.gather_rows(positions, rows)  # [U, L]
    old_values = S.gather_rows(values, rows) * decay(rows, old_cells)
    a_rows = S.weights_at(rows, row_positions, row_weights).unsqueeze(-1)  # [U, 1]
    new_cells = col_positions.unsqueeze(-2).expand(*rows.shape, col_positions.shape[-1])
    cells = torch.cat([old_cells, new_cells], -1)
    candidates = torch.cat([old_values, a_rows * col_weights.unsqueeze(-2)], -1)
    candidates = torch.where(cells == rows.unsqueeze(-1), torch.zeros_like(candidates), candidates)
    kept_cells, kept_values = S.top_slots(cells, candidates, keep)
    return LinkRowUpdate(decaying, decayed, rows, kept_cells, kept_values)


def apply_link_row_updates(
    positions: Tensor, values: Tensor, update: LinkRowUpdate, in_place: bool = False
) -> tuple[Tensor, Tensor]:
    """Write an update into a view: decayed rows first, then the rebuilt rows over them. A row listed
    twice gets the same values each time (they depend on the row alone), so repeats are harmless."""
    decay_index = update.decaying.unsqueeze(-1).expand_as(update.decayed)
    row_index = update.rows.unsqueeze(-1).expand_as(update.cells)
    if in_place:
        values.scatter_(-2, decay_index, update.decayed).scatter_(-2, row_index, update.values)
        return positions.scatter_(-2, row_index, update.cells), values
    values = values.scatter(-2, decay_index, update.decayed).scatter(-2, row_index, update.values)
    return positions.scatter(-2, row_index, update.cells), values


def sparse_directional_read_weights(
    positions: Tensor, values: Tensor, prev_read_positions: Tensor, prev_read_weights: Tensor, keep: int
) -> tuple[Tensor, Tensor]:
    """``sum_j V[j, .] w^r_{t-1}[j]`` over a sparse view ``V``, its ``keep`` largest entries per head.

    With the transposed view this is the forward weighting ``f = L w``, with the rows view the
    backward ``b = L^T w``. positions/values ``[N, L]``, prev read slots ``[R, P]`` -> ``[R, keep]`` x2.
    """
    cells = S.gather_rows(positions, prev_read_positions).flatten(-2)  # [R, P * L]
    weights = (S.gather_rows(values, prev_read_positions) * prev_read_weights.unsqueeze(-1)).flatten(-2)
    return S.top_slots(cells, weights, keep)


def temporal_read_slots(
    link_positions: Tensor,
    link_values: Tensor,
    rev_positions: Tensor,
    rev_values: Tensor,
    prev_read_positions: Tensor,
    prev_read_weights: Tensor,
    modes: Tensor,
    keep: int,
) -> tuple[Tensor, Tensor]:
    """The temporal read slots ``[R, 2L]``: backward ``pi_b b`` then forward ``pi_f f`` (modes ``[R, 3]``)."""
    prev = (prev_read_positions, prev_read_weights)
    fwd_pos, fwd = sparse_directional_read_weights(rev_positions, rev_values, *prev, keep)
    bwd_pos, bwd = sparse_directional_read_weights(link_positions, link_values, *prev, keep)
    weights = torch.cat([modes[..., BACKWARD : BACKWARD + 1] * bwd, modes[..., FORWARD : FORWARD + 1] * fwd], -1)
    return torch.cat([bwd_pos, fwd_pos], -1), weights


def temporal_updates(
    link_positions: Tensor,
    link_values: Tensor,
    rev_positions: Tensor,
    rev_values: Tensor,
    prec_positions: Tensor,
    prec_values: Tensor,
    write_positions: Tensor,
    write_weights: Tensor,
) -> tuple[LinkRowUpdate, LinkRowUpdate, tuple[Tensor, Tensor]]:
    """What a write changes in both link views and the precedence, all from the state before it.

    Rows view: ``a = w, b = p_{t-1}``, rebuilt rows = the written cells. Transposed view: ``a = p_{t-1},
    b = w``, rebuilt rows = the precedence cells and the written cells. The links use the
    precedence from *before* this write.
    """
    wp, ww, pp, pv = write_positions, write_weights, prec_positions, prec_values
    rows_update = link_row_updates(link_positions, link_values, rev_positions, wp, wp, ww, pp, pv, wp, ww)
    rev_rows = torch.cat([pp, wp], -1)
    rev_update = link_row_updates(rev_positions, rev_values, link_positions, rev_rows, pp, pv, wp, ww, wp, ww)
    return rows_update, rev_update, sparse_precedence(pp, pv, wp, ww, pp.shape[-1])


def update_links(state: SDNCState) -> SDNCState:
    """Links and precedence after this step's write (state holds the new write slots, old links).
    No gradient passes through them (as in the paper): the write weights enter detached."""
    rows_update, rev_update, (prec_pos, prec_val) = temporal_updates(
        state.link_positions, state.link_matrix, state.rev_link_positions, state.rev_link_matrix,
        state.precedence_positions, state.precedence, state.write_positions, state.write_weights.detach(),
    )  # fmt: skip
    link_pos, link_val = apply_link_row_updates(state.link_positions, state.link_matrix, rows_update)
    rev_pos, rev_val = apply_link_row_updates(state.rev_link_positions, state.rev_link_matrix, rev_update)
    return state._replace(
        link_matrix=link_val, link_positions=link_pos, rev_link_matrix=rev_val, rev_link_positions=rev_pos,
        precedence=prec_val, precedence_positions=prec_pos,
    )  # fmt: skip


def sdnc_interface_fields(read_heads: int, cell_size: int) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of each interface field: SAM's, then ``read_modes`` ``3 * R``."""
    return sam_interface_fields(read_heads, cell_size) + (("read_modes", NUM_READ_MODES * read_heads),)


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
) -> Memory:
    """An SDNC memory: SAM with ``temporal_reads`` (L) forward and L backward reads per head
    through links kept L-sparse per row.

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

    Returns:
        A :class:`~memfn.memory.Memory` whose state is an :class:`SDNCState`; ``step(state, xi)``
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
    links = positive_int("temporal_reads", temporal_reads)
    if links > n:
        raise ValueError(f"temporal_reads must be in [1, nr_cells={n}], got {links}")
    search = knn_config(n, knn, index, num_lists, index_checks)
    fields = sdnc_interface_fields(r, w)
    size = sum(length for _, length in fields)
    sam_size = size - NUM_READ_MODES * r

    def init(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SDNCState:
        dtype = default_dtype(dtype)
        item = torch.empty((), dtype=dtype).element_size()
        # The memory and stamps (checked again below) plus the two link views: values and positions.
        ensure_fits(n * (w * item + 8 + 2 * links * (item + 8)), f"an SDNC memory of {n:,} cells ({dtype})", device)
        base = initial_sparse_state(n, w, r, 2 * links + k, dtype, device)

        def empty(dtype):  # empty link slots: value 0 (their cell does not matter)
            return zeros(n, links, dtype=dtype, device=device)

        return SDNCState(
            *base, link_matrix=empty(dtype), link_positions=empty(torch.long), rev_link_matrix=empty(dtype),
            rev_link_positions=empty(torch.long), precedence=torch.zeros(links, dtype=dtype, device=device),
            precedence_positions=torch.zeros(links, dtype=torch.long, device=device),
        )  # fmt: skip

    def step(state: SDNCState, xi: Tensor) -> tuple[Tensor, SDNCState]:
        check_interface(xi, size)
        io = split_sam_interface(xi[..., :sam_size], r, w)
        modes = torch.softmax(xi[..., sam_size:].unflatten(-1, (r, NUM_READ_MODES)), dim=-1)
        prev_positions, prev_weights = state.read_positions, state.read_weights
        state = update_links(sparse_write(state, io.write_vector, io.interpolation_gate, io.write_gate))
        content_pos, content = content_read(state.memory, io.read_keys, io.read_strengths, k, search)
        temporal_pos, temporal = temporal_read_slots(
            state.link_positions, state.link_matrix, state.rev_link_positions, state.rev_link_matrix,
            prev_positions, prev_weights, modes, links,
        )  # fmt: skip
        positions = torch.cat([temporal_pos, content_pos], -1)
        weights = torch.cat([temporal, modes[..., CONTENT : CONTENT + 1] * content], -1)
        return finish_step(state, positions, weights)

    config = SparseConfig(n, w, r, k, links, search, size)
    return checked_memory(init, step, size, r * w, fields, config, check_not_consumed)


__all__ = [
    "SDNCState",
    "sdnc",
    "sdnc_interface_fields",
    "sparse_directional_read_weights",
    "sparse_link_rows",
    "sparse_precedence",
    "update_links",
]
