"""Sparse addressing (Rae et al. 2016): reads, writes and usage that touch O(K) cells per head.

A sparse weighting is a pair ``(positions [..., P] int64, weights [..., P])``: the weight of cell
``i`` is the sum of ``weights`` over the slots whose position is ``i`` (a position may repeat).
Shapes are for one example; every function broadcasts over leading batch axes. Letters: ``N``
cells, ``W`` cell width, ``R`` read heads, ``K`` sparse reads, ``S`` write slots.
"""

from __future__ import annotations

import torch
from torch import Tensor

from memfn.numerics import cosine_similarity, masked_cosine_similarity

#: The SAM paper's delta: a cell counts as accessed at step t when the weights on it that step
#: (all heads' reads plus the write) sum to more than this.
ACCESS_THRESHOLD = 0.005


def gather_rows(memory: Tensor, positions: Tensor) -> Tensor:
    """Rows of ``memory`` ``[N, W]`` at ``positions`` ``[*P]`` -> ``[*P, W]`` (gradients reach only those rows).

    Examples:
        >>> memfn.sparse.addressing.gather_rows(torch.arange(6.0).reshape(3, 2), torch.tensor([[2, 0]]))
        tensor([[[4., 5.],
                 [0., 1.]]])
    """
    flat = positions.flatten(start_dim=memory.ndim - 2)  # the batch axes stay, the slot axes merge
    index = flat.unsqueeze(-1).expand(*flat.shape, memory.shape[-1])
    return torch.gather(memory, -2, index).reshape(*positions.shape, memory.shape[-1])


# Repeated positions are resolved by sorting (O(P log P)) rather than comparing every pair of slots
# (O(P^2)): the SDNC's link updates coalesce hundreds of candidate slots per step.


def _sorted(positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(order, sorted positions, first)``: a stable sort, and whether each sorted slot starts a run."""
    sorted_positions, order = torch.sort(positions, dim=-1, stable=True)
    first = torch.ones_like(sorted_positions, dtype=torch.bool)
    first = torch.cat([first[..., :1], sorted_positions[..., 1:] != sorted_positions[..., :-1]], -1)
    return order, sorted_positions, first


def repeated_positions(positions: Tensor) -> Tensor:
    """``[..., P]`` -> bool ``[..., P]``: true where an earlier slot holds the same position.

    Examples:
        >>> memfn.sparse.addressing.repeated_positions(torch.tensor([3, 1, 3]))
        tensor([False, False,  True])
    """
    order, _, first = _sorted(positions)
    # The stable sort keeps equal positions in slot order, so a run's first element is its earliest slot.
    return torch.zeros_like(first).scatter(-1, order, ~first)


def weights_at(query: Tensor, positions: Tensor, weights: Tensor) -> Tensor:
    """The dense value of the sparse weighting at each query position.

    query ``[..., Q]``, positions/weights ``[..., P]`` -> ``[..., Q]``: ``sum_p weights[p] [positions[p] == q]``,
    from a sort of the positions and two binary searches per query: no ``N``-sized buffer.

    Examples:
        >>> pos, w = torch.tensor([3, 1, 3]), torch.tensor([0.2, 0.5, 0.1])
        >>> memfn.sparse.addressing.weights_at(torch.tensor([3, 0]), pos, w)
        tensor([0.3000, 0.0000])
    """
    order, sorted_positions, _ = _sorted(positions)
    cumulative = torch.cumsum(weights.gather(-1, order), -1)
    cumulative = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative], -1)
    lo = torch.searchsorted(sorted_positions, query, side="left")
    hi = torch.searchsorted(sorted_positions, query, side="right")
    return torch.where(
        hi > lo, cumulative.gather(-1, hi) - cumulative.gather(-1, lo), torch.zeros_like(query, dtype=weights.dtype)
    )


def coalesced(positions: Tensor, weights: Tensor) -> Tensor:
    """Weights with every position's total on its first slot and 0 on its repeats (same dense weighting).

    Examples:
        >>> memfn.sparse.addressing.coalesced(torch.tensor([3, 1, 3]), torch.tensor([0.2, 0.5, 0.1]))
        tensor([0.3000, 0.5000, 0.0000])
    """
    order, _, first = _sorted(positions)
    run = torch.cumsum(first.to(torch.long), -1) - 1  # run index of each sorted slot
    totals = torch.zeros_like(weights).scatter_add(-1, run, weights.gather(-1, order))
    sorted_result = torch.where(first, totals.gather(-1, run), torch.zeros_like(totals))
    return torch.zeros_like(weights).scatter(-1, order, sorted_result)


def top_slots(positions: Tensor, weights: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Coalesce, then keep the ``k`` largest: ``(positions [..., k], weights [..., k])``.

    The kept weights are the coalesced values themselves (differentiable); only the choice is not.
    Equal totals go to the earlier slot.

    Examples:
        >>> memfn.sparse.addressing.top_slots(torch.tensor([3, 1, 3]), torch.tensor([0.2, 0.25, 0.1]), k=1)
        (tensor([3]), tensor([0.3000]))
    """
    total = coalesced(positions, weights)
    # A stable sort, not topk: equal totals keep slot order on every device and batch shape.
    kept = torch.sort(total.detach(), dim=-1, descending=True, stable=True).indices[..., :k]
    return positions.gather(-1, kept), total.gather(-1, kept)


def sparse_content_weights(
    rows: Tensor, keys: Tensor, strengths: Tensor, positions: Tensor, masks: Tensor | None = None
) -> Tensor:
    """Content weights over each head's K candidate cells: ``softmax_k(beta * cos(k^r, M[pos_k]))``.

    rows ``[R, K, W]`` (the memory at ``positions``), keys ``[R, W]``, strengths ``[R]``, positions
    ``[R, K]`` -> ``[R, K]``, each row a distribution over its *distinct* candidates: a repeated
    position (possible with approximate search) gets weight 0, so no cell is counted twice.
    With ``K = N`` this is the dense content weighting, permuted. With ``masks`` ``[R, W]`` the
    candidates are scored by the masked cosine ``cos(k^r o m, M[pos_k] o m)`` (Csordas &
    Schmidhuber 2019, Eq. 2; :func:`memfn.numerics.masked_cosine_similarity`), exactly: only the
    choice of candidates is approximate (see :func:`memfn.sam`).

    Examples:
        >>> memory, keys = torch.eye(4), torch.tensor([[0.0, 1.0, 0.0, 0.0]])
        >>> pos = memfn.sparse.knn.nearest_cells(memory, keys, k=2)  # [1, 2]
        >>> rows = memfn.sparse.addressing.gather_rows(memory, pos)
        >>> memfn.sparse.addressing.sparse_content_weights(rows, keys, torch.tensor([20.0]), pos).round(decimals=3)
        tensor([[1., 0.]])
    """
    if masks is None:
        similarity = cosine_similarity(keys.unsqueeze(-2), rows).squeeze(-2)  # [R, K]
    else:
        similarity = masked_cosine_similarity(keys, rows, masks)
    scores = similarity * strengths.unsqueeze(-1)
    # Mask after scaling: masking first would put -inf into the strength's gradient (-inf * 0 = NaN).
    return torch.softmax(scores.masked_fill(repeated_positions(positions), float("-inf")), dim=-1)


def least_recently_used(last_access: Tensor) -> Tensor:
    """``I^U``: the cell whose last non-negligible access is oldest. ``[N]`` -> ``[]`` int64.

    Ties (cells never accessed) go to the lowest index, so fresh cells fill up in order.

    Examples:
        >>> memfn.sparse.addressing.least_recently_used(torch.tensor([4, 2, 0, 0]))  # cells 2, 3 never accessed
        tensor(2)
    """
    return torch.argmin(last_access, dim=-1)


def sparse_write_weights(
    prev_read_positions: Tensor,
    prev_read_weights: Tensor,
    least_used: Tensor,
    interpolation_gate: Tensor,
    write_gate: Tensor,
) -> tuple[Tensor, Tensor]:
    """SAM's ``w^w = alpha (gamma w^r_{t-1} + (1 - gamma) I^U)`` as ``(positions [S], weights [S])``.

    prev_read_positions/weights ``[R, P]``, least_used ``[]``, gates ``[1]``; ``S = R * P + 1`` (the
    cells read last step, then the least-recently-used cell). ``w^r_{t-1}`` is the *mean* over heads
    of the read weightings, so ``w^w`` sums to at most 1 like the DNC's (a sum over heads would
    not; pytorch-dnc multiplied them instead).

    Examples:
        >>> gamma, alpha = torch.tensor([0.5]), torch.tensor([1.0])
        >>> pos, w = memfn.sparse.addressing.sparse_write_weights(
        ...     torch.tensor([[5, 6]]), torch.tensor([[0.5, 0.5]]), torch.tensor(9), gamma, alpha)
        >>> pos, w
        (tensor([5, 6, 9]), tensor([0.2500, 0.2500, 0.5000]))
    """
    heads = prev_read_weights.shape[-2]
    positions = torch.cat([prev_read_positions.flatten(-2), least_used.unsqueeze(-1)], -1)
    recent = interpolation_gate * prev_read_weights.flatten(-2) / heads
    weights = write_gate * torch.cat([recent, 1.0 - interpolation_gate], -1)
    return positions, weights


def written_rows(
    old_rows: Tensor, least_used: Tensor, write_positions: Tensor, write_weights: Tensor, write_vector: Tensor
) -> Tensor:
    """The rows at the write slots after SAM's write: ``(1 - e) o M[pos] + (w at pos) v``.

    old_rows ``[S, W]`` (the memory at ``write_positions`` ``[S]``), least_used ``[]`` (erased: ``e``
    is 1 on its slots), write_weights ``[S]``, write_vector ``[W]`` -> ``[S, W]``. A cell on several
    slots gets its total weight on each (summed in one fixed order), hence the same row on each:
    the pure step and the fast path both call this, so they write the same bits.

    Examples:
        >>> pos, w = torch.tensor([0, 2, 2]), torch.tensor([1.0, 0.25, 0.25])
        >>> memfn.sparse.addressing.written_rows(torch.ones(3, 2), torch.tensor(2), pos, w, torch.ones(2))
        tensor([[2.0000, 2.0000],
                [0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    erase = (write_positions == least_used.unsqueeze(-1)).to(old_rows.dtype)
    total = weights_at(write_positions, write_positions, write_weights)
    return old_rows * (1.0 - erase).unsqueeze(-1) + total.unsqueeze(-1) * write_vector.unsqueeze(-2)


def sparse_updated_memory(
    memory: Tensor, least_used: Tensor, write_positions: Tensor, write_weights: Tensor, write_vector: Tensor
) -> Tensor:
    """``M_t = (1 - I^U 1^T) o M_{t-1} + w^w v^T``: erase the least-used row, add the write to S rows.

    memory ``[N, W]``, least_used ``[]`` (one of ``write_positions``, as in SAM's write), write
    positions/weights ``[S]``, write_vector ``[W]`` -> ``[N, W]``. Only ``S`` rows differ from
    ``memory`` (the input is not modified); their values are :func:`written_rows`.

    Examples:
        >>> pos, w = torch.tensor([0, 2]), torch.tensor([1.0, 0.5])  # cell 2 is also the least used
        >>> memfn.sparse.addressing.sparse_updated_memory(torch.ones(3, 2), torch.tensor(2), pos, w, torch.ones(2))
        tensor([[2.0000, 2.0000],
                [1.0000, 1.0000],
                [0.5000, 0.5000]])
    """
    rows = written_rows(gather_rows(memory, write_positions), least_used, write_positions, write_weights, write_vector)
    # A cell on several slots gets the same row from each; only its first slot carries the gradient.
    rows = torch.where(repeated_positions(write_positions).unsqueeze(-1), rows.detach(), rows)
    index = write_positions.unsqueeze(-1).expand(*write_positions.shape, memory.shape[-1])
    # Out of place: under vmap the memory may be shared (unbatched) while the write is batched, and
    # an in-place scatter_ into it is then impossible. (The fast path writes in place.)
    return memory.scatter(-2, index, rows)


def sparse_read_vectors(rows: Tensor, weights: Tensor) -> Tensor:
    """``r = sum_k w[k] M[pos_k]``: rows ``[R, P, W]``, weights ``[R, P]`` -> ``[R, W]``.

    Examples:
        >>> rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # 1 head, 2 slots
        >>> memfn.sparse.addressing.sparse_read_vectors(rows, torch.tensor([[0.25, 0.75]]))
        tensor([[0.2500, 0.7500]])
    """
    return (weights.unsqueeze(-1) * rows).sum(-2)


def last_access(
    prev_last_access: Tensor, time: Tensor, positions: Tensor, weights: Tensor, in_place: bool = False
) -> Tensor:
    """Stamp ``time`` on the cells accessed this step (total weight > :data:`ACCESS_THRESHOLD`).

    prev_last_access ``[N]`` int64, time ``[]`` int64, positions/weights ``[P]`` (the write and read
    slots of the step) -> ``[N]``. Usage in the paper's sense, steps since the last non-negligible
    access, is ``time - last_access``; keeping stamps means only the touched cells change.

    Examples:
        >>> stamps = torch.zeros(4, dtype=torch.long)
        >>> pos, w = torch.tensor([1, 3]), torch.tensor([0.9, 0.001])  # cell 3's weight is negligible
        >>> memfn.sparse.addressing.last_access(stamps, torch.tensor(7), pos, w)
        tensor([0, 7, 0, 0])
    """
    total = weights_at(positions, positions, weights.detach())
    previous = prev_last_access.gather(-1, positions)
    stamped = torch.where(total > ACCESS_THRESHOLD, time.unsqueeze(-1).expand_as(previous), previous)
    # Repeated positions carry the same total, hence the same value: the scatter is deterministic.
    # in_place (the fast path) updates prev_last_access itself.
    if in_place:
        return prev_last_access.scatter_(-1, positions, stamped)
    return prev_last_access.scatter(-1, positions, stamped)


def dense_weights(positions: Tensor, weights: Tensor, nr_cells: int) -> Tensor:
    """The dense ``[..., N]`` weighting of a sparse one (for debug views, plots and tests; O(N)).

    Examples:
        >>> memfn.sparse.addressing.dense_weights(torch.tensor([3, 1, 3]), torch.tensor([0.2, 0.5, 0.1]), nr_cells=4)
        tensor([0.0000, 0.5000, 0.0000, 0.3000])
    """
    out = weights.new_zeros(*weights.shape[:-1], nr_cells)
    return out.scatter_add(-1, positions, weights)


__all__ = [
    "ACCESS_THRESHOLD",
    "coalesced",
    "dense_weights",
    "gather_rows",
    "last_access",
    "least_recently_used",
    "repeated_positions",
    "sparse_content_weights",
    "sparse_read_vectors",
    "sparse_updated_memory",
    "sparse_write_weights",
    "top_slots",
    "written_rows",
    "weights_at",
]
