"""The SDNC's sparse temporal links (Rae et al. 2016): two L-sparse views of the DNC's link matrix.

See :mod:`memfn.sparse._sdnc` for the recursion and what the views approximate. Every function
works on one example's tensors and broadcasts over leading batch axes; the updates are computed
from the views before a step and applied out of place (the pure step) or in place (the fast path).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from memfn.addressing import sharpened_weights
from memfn.interface import BACKWARD, FORWARD
from memfn.sparse import addressing as S


def _write_weight_at(cells: Tensor, write_positions: Tensor, write_weights: Tensor) -> Tensor:
    """``w[cells]`` for a ``[..., M, X]`` block of cell indices (the dense write weighting, sparsely)."""
    flat = S.weights_at(cells.flatten(-2), write_positions, write_weights)
    return flat.reshape(cells.shape)


def link_decay(row_cells: Tensor, entry_cells: Tensor, write_positions: Tensor, write_weights: Tensor) -> Tensor:
    """``D[i, j] = 1 - w[i] - w[j]`` at rows ``[..., M]`` and their entries ``[..., M, X]``, clamped at 0."""
    w_row = S.weights_at(row_cells, write_positions, write_weights).unsqueeze(-1)
    w_entry = _write_weight_at(entry_cells, write_positions, write_weights)
    return (1.0 - w_row - w_entry).clamp(min=0.0)


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
    keep, w = positions.shape[-1], (write_positions, write_weights)
    # 1. Rows that link to a written cell j (found through the other view's row j) only decay.
    decaying = S.gather_rows(other_positions, write_positions).flatten(-2)  # [S * L]
    decayed = S.gather_rows(values, decaying) * link_decay(decaying, S.gather_rows(positions, decaying), *w)
    # 2. Rows in the support of a or w: decay, add a[i] b^T, zero the diagonal, keep the L largest.
    old_cells = S.gather_rows(positions, rows)  # [U, L]
    old_values = S.gather_rows(values, rows) * link_decay(rows, old_cells, *w)
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
    sharpness: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The temporal read slots ``[R, 2L]``: backward ``pi_b b`` then forward ``pi_f f`` (modes ``[R, 3]``).

    ``sharpness`` ``(forward [R], backward [R])``: link distribution sharpness (Csordas &
    Schmidhuber 2019, Sec. 3.3, Eq. 6; :func:`memfn.addressing.sharpened_weights`) on the kept
    ``L`` slots of ``f`` and ``b``, which are all of the weighting the read sees (entries the
    top-L dropped take no part in the renormalisation). ``None``: the plain SDNC.
    """
    prev = (prev_read_positions, prev_read_weights)
    fwd_pos, fwd = sparse_directional_read_weights(rev_positions, rev_values, *prev, keep)
    bwd_pos, bwd = sparse_directional_read_weights(link_positions, link_values, *prev, keep)
    if sharpness is not None:
        fwd, bwd = sharpened_weights(fwd, sharpness[0]), sharpened_weights(bwd, sharpness[1])
    weights = torch.cat([modes[..., BACKWARD : BACKWARD + 1] * bwd, modes[..., FORWARD : FORWARD + 1] * fwd], -1)
    return torch.cat([bwd_pos, fwd_pos], -1), weights


def sparse_precedence_and_links(
    link_positions: Tensor,
    link_values: Tensor,
    rev_positions: Tensor,
    rev_values: Tensor,
    prec_positions: Tensor,
    prec_values: Tensor,
    write_positions: Tensor,
    write_weights: Tensor,
) -> tuple[tuple[Tensor, Tensor], tuple[LinkRowUpdate, LinkRowUpdate]]:
    """The new precedence ``(positions, values)`` and what a write changes in both link views, all
    from the state before it (apply the updates with :func:`apply_link_row_updates`).

    Rows view: ``a = w, b = p_{t-1}``, rebuilt rows = the written cells. Transposed view: ``a = p_{t-1},
    b = w``, rebuilt rows = the precedence cells and the written cells. The links use the
    precedence from *before* this write. No gradient is meant to pass: give detached write weights.
    """
    wp, ww, pp, pv = write_positions, write_weights, prec_positions, prec_values
    rows_update = link_row_updates(link_positions, link_values, rev_positions, wp, wp, ww, pp, pv, wp, ww)
    rev_rows = torch.cat([pp, wp], -1)
    rev_update = link_row_updates(rev_positions, rev_values, link_positions, rev_rows, pp, pv, wp, ww, wp, ww)
    return sparse_precedence(pp, pv, wp, ww, pp.shape[-1]), (rows_update, rev_update)


__all__ = [
    "LinkRowUpdate",
    "link_decay",
    "apply_link_row_updates",
    "link_row_updates",
    "sparse_directional_read_weights",
    "sparse_link_rows",
    "sparse_precedence",
    "sparse_precedence_and_links",
    "temporal_read_slots",
]
