"""The nearest-neighbour boundary of the sparse memories: which K cells each read head looks at.

``nearest_cells(memory, keys, k)`` returns the positions ``[H, K]`` of the ``k`` cells each key
reads. Every backend follows one rule (:func:`ranked_positions` states and implements it):

- **Candidates.** A row is *written* iff it has a non-zero entry. Only written rows are candidates
  while at least ``k`` of them exist; otherwise the remaining slots go to the lowest-index unwritten
  rows, in index order, after every written row (a fresh, all-zero memory reads rows ``0..k-1``).
- **Order.** Candidates go by cosine score, highest first; equal scores go to the lower index.
- **Scores.** The score is the cosine of :func:`memfn.numerics.cosine_similarity` computed in
  float64 and rounded to float32 (:func:`tie_scores`). Float32 and float64 matmuls round
  differently for the same row at different positions (measured: duplicated rows of one memory get
  scores 1 ulp apart), so a float32 score is not a tie-break anyone can reproduce; the float64
  score rounded to float32 is the same for the same row and key wherever and however it is
  computed, except when the float64 value falls within ~1e-16 of a float32 rounding boundary (about
  one tied pair in 10^9). Rows whose scores agree to float32 precision (duplicated rows, rows
  orthogonal to the key, rows with the same dot product and norm) are therefore exact ties, broken by
  index. Parallel rows of different norms are *not* ties: the ``eps`` inside the norm makes the
  longer row's cosine larger by ~``eps / |row|^2``, and every backend ranks them by it. Scores that
  differ by less than a float32 rounding are ties by this definition, not an ordering a float32
  backend could reproduce; that is the only sense in which near-ties are decided.

Backends:

- ``exact``: the rule over all N scores with one ``torch.topk`` over a composite int64 key (the
  float32 score's order-preserving bits, then the reversed index). Pure, vmap- and compile-friendly,
  the same on CPU and CUDA, O(N) per query; the oracle the others are tested against. On eager
  tensors (the shells' fast path) a float32 pass picks ``k + 32`` candidates and only those are
  re-scored in float64, falling back to every row where a tie group crosses that margin
  (``_prefiltered_exact``); under ``vmap`` or ``torch.compile`` every row is scored in float64.
- ``faiss``: a ``torch.library.custom_op`` (``memfn::faiss_nearest_cells``) with a fake kernel and
  a vmap rule, so compiled graphs keep no graph break. Only written rows are indexed (normalised as
  the cosine normalises them, searched by inner product). A search asks for ``2k`` hits and for more
  while the last hit is within :data:`TIE_TOLERANCE` of the k-th (so a tie group at the boundary is
  never cut by faiss's own order); the hits are then re-scored with :func:`tie_scores` on their
  rows and ranked by the rule. So ``flat``, ``ivf`` probing every list and ``hnsw`` with an
  efSearch large enough to find the true neighbours return exactly what ``exact`` returns. With
  fewer lists probed (or a small efSearch) they are approximate: recall in
  ``benchmarks/knn_recall.py``; an IVF search that finds fewer than ``k`` written rows although
  there are ``k`` probes more lists until it does.
- ``auto`` (the default of :func:`memfn.sam`, :func:`memfn.sdnc`, ``memfn.SAM``, ``memfn.SDNC``):
  ``exact`` below :data:`AUTO_EXACT_MAX_CELLS` cells, the faiss IVF index above it when faiss is
  installed (the fast path keeps it up to date instead of rebuilding it: see
  :mod:`memfn.sparse._ann_index`), else ``exact`` with a one-time warning.

Selection carries no gradient (the positions are integers); gradients reach the memory through
the rows the caller gathers at those positions.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from memfn._torch import in_functorch_transform
from memfn._validation import one_of, positive_int
from memfn.numerics import COSINE_EPS

KNN_BACKENDS = ("auto", "exact", "faiss")
FAISS_INDEXES = ("flat", "ivf", "hnsw")
#: Neighbours per node of an HNSW graph (faiss's ``M``).
HNSW_NEIGHBOURS = 32
#: ``knn="auto"`` uses exact top-k up to this many cells and the maintained faiss IVF index above.
#: Measured with ``benchmarks/knn_crossover.py`` (one SAM step's search for B=8 examples, 4 heads,
#: K=4, W=32, one thread; exact: this module's tie-ordered top-k; IVF: the fast path's
#: maintained index, update of the 17 written rows per example included):
#: ms per step, medians over ~1 s, on a shared 2-core machine (two runs per row where they
#: differ: load average ~2 / ~7):
#:
#:     N        exact (this rule)  plain float32 topk  maintained IVF (lists)
#:     1,024         7.4 / 7.3          0.5 / 0.7         9.5 / 45.0  (10)
#:     4,096         8.6 / 12.5         1.2 / 7.2         8.3 / 49.6  (40)
#:     8,192        15.3 / 21.0         2.9 / 14.6        7.9 / 43.8  (81)
#:     16,384       23.3 / 41.1         7.7 / 35.3        8.6 / 40.3  (163)
#:     32,768       66.7 / 169.4       59.0 / 170.6       9.1 / 50.8  (327)
#:     65,536      204.7 / 376.9      106.2 / 360.6      13.5 / 70.5  (655)
#:     131,072     407.9 / 858.0      247.2 / 745.7      10.7 / 65.5  (1310)
#:
#: (The first exact column scored every row in float64; the eager float32 prefilter now in
#: ``_prefiltered_exact`` brings exact to within a few ms of a plain top-k: second column.)
#: IVF's per-example Python and faiss calls suffer most from a busy machine. Parity is near 16,384
#: cells in both runs; exact is kept up to there (it is exact, and pytorch-dnc's default
#: ``nr_cells=5000`` stays exact), the maintained IVF index above, where exact grows linearly.
AUTO_EXACT_MAX_CELLS = 2**14
#: A faiss hit within this many key norms of the k-th hit's inner product may tie with it: the
#: search asks for more hits until the last one is further away (faiss scores in float32).
TIE_TOLERANCE = 1e-4


class KNNConfig(NamedTuple):
    """A validated nearest-neighbour configuration (static: it is closed over, never traced).

    ``auto`` is true when ``knn="auto"`` chose the backend: then the pure step searches exactly
    (an IVF index built afresh every step is never cheaper than exact top-k) and only the shells'
    fast path uses the index, kept up to date row by row.

    Examples:
        >>> memfn.sparse.knn.knn_config(nr_cells=1000)
        KNNConfig(backend='exact', index='flat', num_lists=10, index_checks=32, auto=False)
    """

    backend: str = "exact"
    index: str = "flat"  # type: ignore[assignment]  # a field named like tuple.index (public API)
    num_lists: int = 1
    index_checks: int = 1
    auto: bool = False


def knn_config(
    nr_cells: int,
    knn: str = "exact",
    index: str = "flat",
    num_lists: int | None = None,
    index_checks: int | None = None,
) -> KNNConfig:
    """Check the backend and index options against the memory size, with pytorch-dnc's defaults.

    ``num_lists`` (IVF lists) defaults to ``max(1, nr_cells // 100)`` as in pytorch-dnc and must lie
    in ``[1, nr_cells]``; ``index_checks`` (IVF lists probed, or HNSW's efSearch) defaults to
    ``min(32, num_lists)`` for IVF and 32 for HNSW, and cannot exceed ``num_lists`` for IVF.

    ``knn="auto"`` resolves to ``exact`` up to :data:`AUTO_EXACT_MAX_CELLS` cells and to
    ``faiss``/``ivf`` with the default lists above, or to ``exact`` with a one-time warning when
    faiss is not installed.

    Examples:
        >>> memfn.sparse.knn.knn_config(nr_cells=1000, index="flat").num_lists  # faiss's options need knn="faiss"
        10
        >>> memfn.sparse.knn.knn_config(nr_cells=2**20, knn="auto")[:2]
        ('faiss', 'ivf')
    """
    one_of("knn", knn, KNN_BACKENDS)
    one_of("index", index, FAISS_INDEXES)
    if knn != "faiss" and (index != "flat" or num_lists is not None or index_checks is not None):
        raise ValueError(
            "index, num_lists and index_checks configure the faiss backend; pass knn='faiss' to use them "
            f"(got knn={knn!r}, index={index!r}, num_lists={num_lists!r}, index_checks={index_checks!r})"
        )
    if knn == "auto":
        if nr_cells <= AUTO_EXACT_MAX_CELLS:
            return knn_config(nr_cells)._replace(auto=True)
        if not _faiss_available():
            _warn_exact_fallback(nr_cells)
            return knn_config(nr_cells)._replace(auto=True)
        return knn_config(nr_cells, "faiss", "ivf")._replace(auto=True)
    if knn == "faiss":
        _require_faiss()
    lists = max(1, nr_cells // 100) if num_lists is None else positive_int("num_lists", num_lists)
    if lists > nr_cells:
        raise ValueError(f"num_lists must be in [1, nr_cells={nr_cells}] (an IVF list needs a cell), got {lists}")
    if index_checks is None:
        checks = min(32, lists) if index == "ivf" else 32
    else:
        checks = positive_int("index_checks", index_checks)
        if index == "ivf" and checks > lists:
            raise ValueError(
                f"index_checks (lists probed) must be in [1, num_lists={lists}] for index='ivf', got {checks}"
            )
    return KNNConfig(knn, index, lists, checks)


EXACT = KNNConfig()
_warned_exact_fallback = False


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _warn_exact_fallback(nr_cells: int) -> None:
    global _warned_exact_fallback
    if _warned_exact_fallback:
        return
    _warned_exact_fallback = True
    warnings.warn(
        f"knn='auto': {nr_cells:,} cells is above {AUTO_EXACT_MAX_CELLS:,}, where the maintained faiss IVF index "
        "is faster, but faiss is not installed: falling back to exact top-k, O(N) per step. "
        'pip install "memfn[faiss]" (or pass knn="exact" to silence this warning)',
        stacklevel=3,
    )


def nearest_cells(memory: Tensor, keys: Tensor, k: int, config: KNNConfig = EXACT) -> Tensor:
    """Positions of the ``k`` rows of ``memory`` most cosine-similar to each key, best first, by
    the rule of this module (written rows only while ``k`` exist, equal scores to the lower index).

    memory ``[N, W]``, keys ``[H, W]`` -> ``[H, K]`` (int64). Broadcasts over leading batch axes.

    Examples:
        >>> memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> memfn.sparse.knn.nearest_cells(memory, torch.tensor([[1.0, 0.1]]), k=2)
        tensor([[0, 2]])
        >>> memfn.sparse.knn.nearest_cells(torch.zeros(16, 2), torch.ones(1, 2), k=3)  # nothing written yet
        tensor([[0, 1, 2]])
    """
    memory, keys = memory.detach(), keys.detach()
    if config.backend == "exact" or config.auto:
        # knn="auto" chose IVF for the fast path's maintained index; an index built afresh each step
        # (k-means on N rows, then adding them) costs more than exact top-k.
        if _eager(memory, keys) and memory.shape[-2] > k + PREFILTER_MARGIN:
            found = _prefiltered_exact(memory, keys, k)
            if found is not None:
                return found
        scores, written = _tie_scores_and_written(keys, memory)  # [..., H, N], [..., N]
        ids = torch.arange(memory.shape[-2], device=memory.device)
        return ranked_positions(scores, ids, written.unsqueeze(-2), k)
    lead = torch.broadcast_shapes(memory.shape[:-2], keys.shape[:-2])  # type: ignore[no-untyped-call]  # torch
    memory = memory.expand(*lead, *memory.shape[-2:])
    keys = keys.expand(*lead, *keys.shape[-2:])
    return cast(Tensor, _faiss_op(memory, keys, k, config.index, config.num_lists, config.index_checks))


#: Extra float32 candidates the eager exact search re-scores in float64 (see ``_prefiltered_exact``).
PREFILTER_MARGIN = 32


def _eager(*tensors: Tensor) -> bool:
    """Plain eager tensors: no ``torch.func`` transform, not being compiled (a data-dependent branch is fine)."""
    transformed = in_functorch_transform()
    return not transformed and not torch.compiler.is_compiling() and all(type(t) is Tensor for t in tensors)


def _prefiltered_exact(memory: Tensor, keys: Tensor, k: int) -> Tensor | None:
    """The exact backend's answer at float32 cost, or None where it cannot be sure of it.

    A float32 cosine is within ``tol`` of :func:`tie_scores`. Take the ``k + PREFILTER_MARGIN`` best
    rows by float32 score; if the last of them scores below the k-th minus ``2 tol``, no row outside
    them can reach the rule's top k (its canonical score is strictly below the k-th's), so re-scoring
    just these in float64 and ranking them by the rule gives the full answer. Otherwise (a tie group
    wider than the margin at the boundary, fewer than k written rows) the caller scores every row.
    Used on eager tensors only (the shells' fast path); transforms and compiled steps score every row.
    """
    c = k + PREFILTER_MARGIN
    square = (memory * memory).sum(-1)  # [..., N]
    key_norm = torch.sqrt((keys * keys).sum(-1) + COSINE_EPS).unsqueeze(-1)  # [..., H, 1]
    scores = (keys @ memory.transpose(-1, -2)) / (key_norm * torch.sqrt(square + COSINE_EPS).unsqueeze(-2))
    scores = torch.where((square > 0).unsqueeze(-2), scores, float("-inf"))
    top = torch.topk(scores, c, dim=-1)
    tol = 4 * (memory.shape[-1] + 8) * torch.finfo(scores.dtype).eps
    if not bool((top.values[..., c - 1] < top.values[..., k - 1] - 2 * tol).all()):
        return None
    lead = torch.broadcast_shapes(memory.shape[:-2], keys.shape[:-2])  # type: ignore[no-untyped-call]  # torch
    candidates = top.indices  # [..., H, c]
    rows = memory.expand(*lead, *memory.shape[-2:]).unsqueeze(-3)
    rows = rows.expand(*rows.shape[:-3], candidates.shape[-2], *rows.shape[-2:])
    rows = rows.gather(-2, candidates.unsqueeze(-1).expand(*candidates.shape, memory.shape[-1]))  # [..., H, c, W]
    rescored = tie_scores(keys.unsqueeze(-2), rows).squeeze(-2)  # [..., H, c]
    return ranked_positions(rescored, candidates, top.values > float("-inf"), k)


def tie_scores(keys: Tensor, rows: Tensor) -> Tensor:
    """The scores the rule ranks by: the cosine computed in float64, rounded to float32.

    keys ``[..., H, W]``, rows ``[..., N, W]`` -> ``[..., H, N]`` float32. The same row and key give
    the same value at any position, in any batch, on any device (but for float64 values within
    ~1e-16 of a float32 rounding boundary); a float32 matmul does not (its rounding depends on the
    row's position in the blocked product).

    Examples:
        >>> rows = torch.tensor([[0.3, 0.4], [0.5, 0.0], [0.3, 0.4], [0.0, 1.0]])
        >>> s = memfn.sparse.knn.tie_scores(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), rows)
        >>> bool(s[0, 0] == s[0, 2]), bool(s[1, 1] == 0), s.dtype  # duplicates tie; orthogonal: 0
        (True, True, torch.float32)
    """
    return _tie_scores_and_written(keys, rows)[0]


#: Rows converted to float64 at a time: big temporaries cost page faults on every step.
_SCORE_CHUNK = 4096


def _tie_scores_and_written(keys: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`tie_scores` and which rows are written (non-zero) ``[..., N]``, in chunks of rows (at
    most 16, so a compiled step stays small)."""
    wide = torch.float32 if keys.device.type == "mps" else torch.float64  # MPS has no float64
    keys = keys.to(wide)
    key_norm = torch.sqrt((keys * keys).sum(-1) + COSINE_EPS).unsqueeze(-1)  # [..., H, 1]
    n = rows.shape[-2]
    size = max(_SCORE_CHUNK, -(-n // 16))
    scores, written = [], []
    for start in range(0, n, size):
        chunk = rows[..., start : start + size, :]
        written.append((chunk * chunk).sum(-1) > 0)  # in the memory's dtype, as the eager prefilter has it
        chunk = chunk.to(wide)
        row_norm = torch.sqrt((chunk * chunk).sum(-1) + COSINE_EPS).unsqueeze(-2)  # [..., 1, n]
        scores.append(((keys @ chunk.transpose(-1, -2)) / (key_norm * row_norm)).float())
    if len(scores) == 1:
        return scores[0], written[0]
    return torch.cat(scores, -1), torch.cat(written, -1)


def ranked_positions(scores: Tensor, ids: Tensor, written: Tensor, k: int, valid: Tensor | None = None) -> Tensor:
    """The rule: the ``k`` ids of the written candidates with the highest scores, equal scores to the
    lower id; fewer than ``k`` written candidates: then the unwritten ones, lowest id first.

    scores ``[..., H, C]`` (float32, from :func:`tie_scores`), ids and written broadcastable to it
    (ids distinct, non-negative, below 2^32), ``valid`` (optional) marks candidates that exist at
    all (they rank after every other) -> ``[..., H, K]`` int64, best first.

    One ``torch.topk`` over a composite int64 key (the float32 score's order-preserving bits, then
    ``2^32 - 1 - id``): all keys differ, so there is no tie left for topk to break its own way.
    """
    ids = ids.expand_as(scores)
    scores = torch.where(written, scores, float("-inf")) + 0.0  # +0.0: -0.0 and 0.0 tie
    bits = scores.view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()  # same order as the floats
    if valid is not None:
        ordered = torch.where(valid, ordered, -(2**31))
    key = ordered * 2**32 + (2**32 - 1 - ids)
    return ids.gather(-1, torch.topk(key, k, dim=-1).indices)


def searchable_rows(rows: Tensor) -> np.ndarray:
    """Rows as faiss indexes them: float32 on the CPU, normalised as the cosine normalises them (eps
    inside the root), so inner products rank like cosine similarities. (Keys need no normalising:
    one key's norm is a constant.)"""
    rows = rows.detach() / torch.sqrt((rows.detach() * rows.detach()).sum(-1, keepdim=True) + COSINE_EPS)
    return rows.to("cpu", torch.float32).contiguous().numpy()


def search_with_ties(index: Any, queries: np.ndarray, k: int, count: int) -> np.ndarray:
    """Hit ids ``[H, C]`` (-1: none) of a faiss inner-product ``index`` over ``count`` rows, enough of
    them that the rule can rank them: at least ``min(k, count)`` per query where the index can find
    them, and every hit within :data:`TIE_TOLERANCE` of the k-th (a tie group at the boundary is
    never cut by faiss's own order). An IVF index probing too few lists to find ``k`` hits probes
    more (doubling) until it does."""
    if count == 0:
        return np.full((len(queries), 0), -1, dtype=np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    tol = TIE_TOLERANCE * np.sqrt((queries.astype(np.float64) ** 2).sum(-1) + COSINE_EPS)
    want, first = min(count, 2 * k), min(k, count)
    probe = getattr(index, "nprobe", None)
    try:
        while True:
            scores, hits = index.search(queries, want)
            lists = getattr(index, "nlist", None)
            if probe is not None and lists is not None and (hits[:, first - 1] < 0).any() and index.nprobe < lists:
                index.nprobe = min(lists, 2 * index.nprobe)
                continue
            if want >= count:
                return cast(np.ndarray, hits)
            kth, last = scores[:, first - 1].astype(np.float64), scores[:, want - 1].astype(np.float64)
            if not ((hits[:, want - 1] >= 0) & (last >= kth - tol)).any():
                return cast(np.ndarray, hits)
            want = min(count, 2 * want)
    finally:
        if probe is not None:
            index.nprobe = probe


def rank_hits(memory: Tensor, keys: Tensor, hits: np.ndarray, k: int, unwritten: np.ndarray) -> Tensor:
    """Rank a faiss search's hits by the rule: re-score them with :func:`tie_scores` on their rows.

    memory ``[N, W]``, keys ``[H, W]``, hits ``[H, C]`` ids of written rows (-1: none), ``unwritten``
    the lowest-index unwritten rows (needed only while fewer than ``k`` rows are written) ->
    ``[H, K]``. Should an approximate index find fewer than ``k`` written rows while ``k`` exist,
    the best hit is repeated (the sparse reads give repeated positions no weight).
    """
    device = memory.device
    h = keys.shape[-2]
    found = torch.from_numpy(np.ascontiguousarray(hits, dtype=np.int64)).to(device)
    fill = torch.from_numpy(np.ascontiguousarray(unwritten[:k], dtype=np.int64)).to(device)
    ids = torch.cat([found, fill.expand(h, -1)], -1)
    valid = ids >= 0
    written = torch.cat([found >= 0, torch.zeros(h, len(fill), dtype=torch.bool, device=device)], -1)
    ids = ids.clamp(min=0)
    if ids.shape[-1] < k:  # nothing to rank in some slots: pad with invalid candidates
        pad = k - ids.shape[-1]
        ids = torch.cat([ids, ids.new_zeros(h, pad)], -1)
        valid = torch.cat([valid, valid.new_zeros(h, pad)], -1)
        written = torch.cat([written, written.new_zeros(h, pad)], -1)
    scores = tie_scores(keys.unsqueeze(-2), memory[ids]).squeeze(-2)  # [H, C]
    # Invalid candidates get distinct fake ids above every real one, so the composite key stays unique.
    ranked_ids = torch.where(valid, ids, memory.shape[-2] + torch.arange(ids.shape[-1], device=device))
    positions = ranked_positions(scores, ranked_ids, written, k, valid)
    return torch.where(positions < memory.shape[-2], positions, positions[..., :1].clamp(max=memory.shape[-2] - 1))


def _require_faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - exercised only without faiss installed
        raise ImportError(
            "knn='faiss' needs the faiss package: pip install -e '.[faiss]' (CPU) or -e '.[gpu]' (CUDA), "
            'in a memfn checkout (pip install "memfn[faiss]" from a package index)'
        ) from err
    return faiss


@torch.library.custom_op("memfn::faiss_nearest_cells", mutates_args=())
def _faiss_op(memory: Tensor, keys: Tensor, k: int, index: str, num_lists: int, index_checks: int) -> Tensor:
    faiss = _require_faiss()
    lead = memory.shape[:-2]
    n, w = memory.shape[-2:]
    if memory.numel() == 0:  # an empty batch: nothing to search
        return torch.empty(*lead, keys.shape[-2], k, dtype=torch.long, device=memory.device)
    memory = memory.reshape(-1, n, w)
    keys = keys.reshape(memory.shape[0], -1, w)
    queries = keys.to("cpu", torch.float32).contiguous().numpy()
    out = []
    for b in range(memory.shape[0]):
        written = _tie_scores_and_written(keys[b, :0], memory[b])[1]
        ids = torch.nonzero(written).squeeze(-1).cpu().numpy()
        hits = np.full((queries.shape[1], 0), -1, dtype=np.int64)
        if len(ids):
            built = _build_index(faiss, searchable_rows(memory[b, written]), index, min(num_lists, len(ids)),
                                 index_checks, memory.device)  # fmt: skip
            found = search_with_ties(built, queries[b], k, len(ids))
            hits = np.where(found >= 0, ids[found.clip(min=0)], -1)
        unwritten = torch.nonzero(~written[: 2 * k]).squeeze(-1).cpu().numpy() if len(ids) < k else ids[:0]
        out.append(rank_hits(memory[b], keys[b], hits, k, unwritten))
    return torch.stack(out).reshape(*lead, queries.shape[1], k)


@_faiss_op.register_fake
def _(memory: Tensor, keys: Tensor, k: int, index: str, num_lists: int, index_checks: int) -> Tensor:
    return keys.new_empty(*keys.shape[:-1], k, dtype=torch.long)


def _faiss_vmap(
    info: Any,
    in_dims: tuple[int | None, ...],
    memory: Tensor,
    keys: Tensor,
    k: int,
    index: str,
    num_lists: int,
    index_checks: int,
) -> tuple[Tensor, int]:
    memory, keys = (
        t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
        for t, d in ((memory, in_dims[0]), (keys, in_dims[1]))
    )
    return _faiss_op(memory, keys, k, index, num_lists, index_checks), 0


torch.library.register_vmap(_faiss_op, _faiss_vmap)


def _fill_missing(labels: np.ndarray) -> np.ndarray:
    """Kept for callers of the raw ``MaintainedIndex.search``: repeat the best hit where a search
    returned -1. The backends no longer use it (see :func:`rank_hits`)."""
    best = np.where(labels[:, :1] >= 0, labels[:, :1], 0)
    return np.where(labels >= 0, labels, best)


_gpu_resources: dict[int, object] = {}
_gpu_lock = threading.Lock()


def _gpu_resources_for(faiss: Any, device: torch.device) -> tuple[Any, int]:
    """One ``StandardGpuResources`` per CUDA device, on the tensor's device (not always GPU 0)."""
    index = torch.cuda.current_device() if device.index is None else device.index
    with _gpu_lock:
        if index not in _gpu_resources:
            _gpu_resources[index] = faiss.StandardGpuResources()
        return _gpu_resources[index], index


def _build_index(
    faiss: Any, rows: np.ndarray, index: str, num_lists: int, index_checks: int, device: torch.device
) -> Any:
    n, w = rows.shape
    on_gpu = device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
    if index == "hnsw":  # faiss has no GPU HNSW: it runs on the CPU either way.
        built = faiss.IndexHNSWFlat(w, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        built.hnsw.efSearch = index_checks
        built.add(rows)
        return built
    if index == "flat":
        built = faiss.IndexFlatIP(w)
    else:
        built = faiss.IndexIVFFlat(faiss.IndexFlatIP(w), w, num_lists, faiss.METRIC_INNER_PRODUCT)
        # Train on the memory itself (pytorch-dnc trained on random noise); a few points per list
        # is enough for a per-step index, and faiss would otherwise warn below 39 per list.
        built.cp.min_points_per_centroid = 1
        built.train(rows)
        built.nprobe = min(index_checks, num_lists)
    if on_gpu:
        resources, gpu = _gpu_resources_for(faiss, device)
        built = faiss.index_cpu_to_gpu(resources, gpu, built)
    built.add(rows)
    return built


__all__ = [
    "AUTO_EXACT_MAX_CELLS",
    "FAISS_INDEXES",
    "KNNConfig",
    "KNN_BACKENDS",
    "knn_config",
    "nearest_cells",
    "ranked_positions",
    "tie_scores",
]
