"""An approximate nearest-neighbour index kept in step with a memory, not rebuilt every step.

:class:`MaintainedIndex` is a faiss IVF index over one example's memory rows (normalised like the
cosine). After each write only the rows that changed are removed and re-added (a hashtable direct
map makes that O(rows changed)), so a step's search stays sublinear in N. The coarse quantiser is
retrained on the rows themselves, never on noise, each time the number of indexed rows has doubled
and then every time as many rows have been rewritten as were indexed at the last training: the
occasional rebuild the SAM paper describes, amortised O(1) per written row.

Never-written (all-zero) rows are left out of the index: they have no direction, and thousands of
them in one inverted list would make that list's scan O(N). :meth:`MaintainedIndex.nearest` follows
the rule of :mod:`memfn.sparse.knn`: hits re-scored and ranked as exact search ranks them (equal scores to
the lower index), and while fewer than k rows are written the lowest-index unwritten rows fill the
remaining slots (found in ``present[:k]``: O(k), and only during a fresh memory's first steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from memfn.sparse.knn import _require_faiss, rank_hits, search_with_ties

#: Rows per inverted list the quantiser aims for while the memory fills (faiss wants >= 39 to train).
ROWS_PER_LIST = 39


class MaintainedIndex:
    """A faiss IVF inner-product index over the rows of one ``[N, W]`` memory, by cell id.

    ``num_lists`` is the most inverted lists it will use (fewer while few rows are written),
    ``index_checks`` the lists probed per search.
    """

    def __init__(self, nr_cells: int, cell_size: int, num_lists: int, index_checks: int) -> None:
        self.faiss = _require_faiss()
        self.cell_size = cell_size
        self.num_lists, self.index_checks = num_lists, index_checks
        self.present = np.zeros(nr_cells, dtype=bool)
        self.count = 0  # rows in the index
        self.trained_on = 0  # rows the quantiser was last trained on
        self.rewrites = 0  # rows updated since then
        self.rebuilds = 0
        self.index: Any = None

    # -- building -------------------------------------------------------------------------------

    def rebuild(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """Train a fresh IVF on ``rows`` ``[n, W]`` (normalised, all non-zero) and index them as ``ids``."""
        faiss = self.faiss
        self.present[:] = False
        self.count, self.trained_on, self.rewrites = len(rows), len(rows), 0
        self.rebuilds += 1
        if not len(rows):
            self.index = None
            return
        # Lists grow with the rows indexed: ~4 sqrt(n) balances the quantiser scan against the list
        # scans (and keeps retraining affordable), capped by num_lists and by rows per list.
        lists = max(1, min(self.num_lists, int(4 * np.sqrt(len(rows))), len(rows) // ROWS_PER_LIST))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.cell_size), self.cell_size, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # a one-list index trained on a handful of rows is fine
        index.cp.max_points_per_centroid = 64  # k-means on a sample: retraining stays a fraction of a rebuild
        index.train(rows)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids by id, O(1) each
        index.nprobe = min(self.index_checks, lists)
        index.add_with_ids(rows, ids)
        self.index = index
        self.present[ids] = True

    def update(self, ids: np.ndarray, rows: np.ndarray, all_rows: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """The rows of cells ``ids`` (unique) are now ``rows`` (normalised; zero rows are dropped).

        ``all_rows()`` returns ``(rows, ids)`` of every non-zero row; it is called only when the
        quantiser is due for retraining (or there is no index yet).
        """
        keep = np.abs(rows).sum(-1) > 0
        old = ids[self.present[ids]]
        self.rewrites += len(old)  # rows changed in place (new rows count as growth)
        grown = self.count + int(keep.sum()) - len(old) >= 2 * max(self.trained_on, ROWS_PER_LIST)
        churned = self.rewrites >= max(self.trained_on, 1024)
        if self.index is None or grown or churned:
            self.rebuild(*all_rows())
            return
        if len(old):
            self.index.remove_ids(self.faiss.IDSelectorArray(old))
            self.present[old] = False
        if keep.any():
            self.index.add_with_ids(np.ascontiguousarray(rows[keep]), ids[keep])
            self.present[ids[keep]] = True
        self.count += int(keep.sum()) - len(old)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Ids ``[H, k]`` of the rows with the largest inner product with each query (-1: none)."""
        if self.count == 0:
            return np.full((len(queries), k), -1, dtype=np.int64)
        return cast(np.ndarray, self.index.search(queries, k)[1])

    def nearest(self, memory: Tensor, keys: Tensor, k: int) -> Tensor:
        """Positions ``[H, k]`` of the cells each key reads, by the rule of :mod:`memfn.sparse.knn`.

        ``memory`` ``[N, W]`` is the memory this index follows (its rows re-score the hits), keys
        ``[H, W]``. Probing every list, this is exact search's answer.
        """
        queries = keys.detach().to("cpu", torch.float32).numpy()
        hits = search_with_ties(self.index, queries, k, self.count) if self.count else queries[:, :0].astype(np.int64)
        unwritten = np.flatnonzero(~self.present[:k]) if self.count < k else np.empty(0, dtype=np.int64)
        return rank_hits(memory.detach(), keys.detach(), hits, k, unwritten)


def maintained_nearest(indexes: list[MaintainedIndex], memory: Tensor, keys: Tensor, k: int) -> Tensor:
    """:meth:`MaintainedIndex.nearest` for a batch: memory ``[B, N, W]``, keys ``[B, H, W]`` -> ``[B, H, k]``."""
    return torch.stack([index.nearest(memory[b], keys[b], k) for b, index in enumerate(indexes)])
