"""The one SAM/SDNC step: the sequence of named operations both paths run.

The pure ``step`` of :func:`memfn.sam` / :func:`memfn.sdnc` and the fast path
(:class:`memfn.sparse._fast.SparseEngine`) call :func:`sparse_step` with different *row stores*:

- :class:`PureRows` holds one state's memory, usage stamps and links and replaces them with new
  tensors (functional: the state passed in is never modified; vmap and compile see pure code);
- the fast path's store updates one batched buffer in place and records a sparse tape for
  backward (Rae et al. 2016, "efficient backpropagation").

A change to the algorithm is made here, once; the stores only say how rows are kept. Both stores
compute a written row with :func:`memfn.sparse.addressing.written_rows` and search with
:func:`memfn.sparse.knn.nearest_cells` (or an index that follows the same candidate and tie rule),
so the two paths pick the same positions and write the same bits.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from memfn.interface import CONTENT
from memfn.sparse import addressing as S
from memfn.sparse._links import (
    LinkRowUpdate,
    apply_link_row_updates,
    sparse_precedence_and_links,
    temporal_read_slots,
)
from memfn.sparse.knn import KNNConfig, nearest_cells


class Rows(Protocol):
    """Where a sparse memory keeps its rows, usage stamps and links (functional or in place)."""

    def least_used(self) -> Tensor:
        """``I^U``: the least-recently-used cell ``[...]`` int64."""

    def write(self, positions: Tensor, weights: Tensor, vector: Tensor, least_used: Tensor) -> None:
        """``M_t = (1 - e) o M_{t-1} + w v^T`` on the rows at ``positions`` ``[..., S]`` (``e``: the
        least-used cell's slots), the rows computed by :func:`~memfn.sparse.addressing.written_rows`."""

    def nearest(self, keys: Tensor, k: int) -> Tensor:
        """Each key's ``k`` nearest cells ``[..., R, K]`` in the memory as written so far."""

    def gather(self, positions: Tensor) -> Tensor:
        """The rows at ``positions`` ``[..., R, P]`` -> ``[..., R, P, W]`` (differentiable)."""

    def stamp(self, time: Tensor, positions: Tensor, weights: Tensor) -> None:
        """Stamp ``time`` on the cells accessed this step (see :func:`~memfn.sparse.addressing.last_access`)."""

    def links(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(link_positions, link_matrix, rev_link_positions, rev_link_matrix)`` (SDNC)."""

    def set_links(self, updates: tuple[LinkRowUpdate, LinkRowUpdate]) -> None:
        """Apply the link updates of :func:`~memfn.sparse._links.sparse_precedence_and_links`."""


class StepConfig(NamedTuple):
    """What the step needs of a SAM/SDNC configuration."""

    sparse_reads: int  # K
    temporal_reads: int  # L, 0 for SAM


class Carried(NamedTuple):
    """The small per-step leaves a step reads and returns (the big ones live in the store)."""

    read_positions: Tensor  # [..., R, P]
    read_weights: Tensor  # [..., R, P]
    write_positions: Tensor  # [..., S]
    write_weights: Tensor  # [..., S]
    time: Tensor  # [...]
    precedence: Tensor  # [..., L] (SDNC) or [..., 0]
    precedence_positions: Tensor  # [..., L] (SDNC) or [..., 0]


def sparse_step(
    rows: Rows,
    carried: Carried,
    read_keys: Tensor,
    read_strengths: Tensor,
    write_vector: Tensor,
    interpolation_gate: Tensor,
    write_gate: Tensor,
    read_modes: Tensor | None,
    config: StepConfig,
    read_masks: Tensor | None = None,
    sharpness: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Carried]:
    """One SAM (``read_modes=None``) or SDNC step on ``rows``: write, then links, then read, then stamp.

    Activated interface fields as :class:`~memfn.sparse.SAMInterface`; ``read_modes`` ``[..., R, 3]``
    (backward, forward, content); ``read_masks`` ``[..., R, W]`` (masked content reads) or None;
    ``sharpness`` ``(forward [..., R], backward [..., R])`` link sharpness exponents (SDNC) or None.
    Returns the read vectors ``[..., R, W]`` and the new carried leaves.
    """
    prev = carried
    # Write: the previous step's read cells and the least-used one (SAM's w^w), erasing the latter.
    least_used = rows.least_used()  # I^U
    positions, weights = S.sparse_write_weights(
        prev.read_positions, prev.read_weights, least_used, interpolation_gate, write_gate
    )
    rows.write(positions, weights, write_vector, least_used)
    precedence, precedence_positions = prev.precedence, prev.precedence_positions
    if read_modes is not None:  # SDNC: links and precedence, from the write (no gradient through them)
        (precedence_positions, precedence), updates = sparse_precedence_and_links(
            *rows.links(), prev.precedence_positions, prev.precedence, positions, weights.detach()
        )
        rows.set_links(updates)
    # Read: content slots (K nearest cells) and, for the SDNC, temporal slots before them.
    k = config.sparse_reads
    # Masked reads: the index holds unmasked rows, so it is asked with the masked key for candidates
    # and only those are scored with the exact masked cosine (a row it ranks low is never scored).
    content_positions = rows.nearest(read_keys if read_masks is None else read_keys * read_masks, k)
    read_positions = content_positions
    if read_modes is not None:
        temporal_positions, temporal = temporal_read_slots(
            *rows.links(), prev.read_positions, prev.read_weights, read_modes, config.temporal_reads, sharpness
        )
        read_positions = torch.cat([temporal_positions, content_positions], -1)
    read_rows = rows.gather(read_positions)  # [..., R, P, W]
    content = S.sparse_content_weights(read_rows[..., -k:, :], read_keys, read_strengths, content_positions, read_masks)
    read_weights = content
    if read_modes is not None:
        read_weights = torch.cat([temporal, read_modes[..., CONTENT : CONTENT + 1] * content], -1)
    reads = S.sparse_read_vectors(read_rows, read_weights)
    time = prev.time + 1
    rows.stamp(
        time,
        torch.cat([positions, read_positions.flatten(-2)], -1),
        torch.cat([weights, read_weights.flatten(-2)], -1),
    )
    return reads, Carried(read_positions, read_weights, positions, weights, time, precedence, precedence_positions)


class PureRows:
    """The functional store: one (or a broadcast batch of) state's tensors, replaced, never modified."""

    def __init__(self, memory: Tensor, last_access: Tensor, links: tuple[Tensor, ...] | None, knn: KNNConfig) -> None:
        self.memory, self.last_access, self._links, self.knn = memory, last_access, links, knn

    def least_used(self) -> Tensor:
        return S.least_recently_used(self.last_access)

    def write(self, positions: Tensor, weights: Tensor, vector: Tensor, least_used: Tensor) -> None:
        self.memory = S.sparse_updated_memory(self.memory, least_used, positions, weights, vector)

    def nearest(self, keys: Tensor, k: int) -> Tensor:
        return nearest_cells(self.memory, keys, k, self.knn)

    def gather(self, positions: Tensor) -> Tensor:
        return S.gather_rows(self.memory, positions)

    def stamp(self, time: Tensor, positions: Tensor, weights: Tensor) -> None:
        self.last_access = S.last_access(self.last_access, time, positions, weights)

    def links(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        assert self._links is not None
        return self._links  # type: ignore[return-value]

    def set_links(self, updates: tuple[LinkRowUpdate, LinkRowUpdate]) -> None:
        rows_update, rev_update = updates
        link_pos, link_val, rev_pos, rev_val = self.links()
        self._links = (
            *apply_link_row_updates(link_pos, link_val, rows_update),
            *apply_link_row_updates(rev_pos, rev_val, rev_update),
        )


__all__ = ["Carried", "PureRows", "Rows", "StepConfig", "sparse_step"]
