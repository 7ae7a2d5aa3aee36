"""The nearest-neighbour boundary of the sparse memories: which K cells each read head looks at.

``nearest_cells(memory, keys, k)`` returns the positions ``[H, K]`` of the ``k`` cells whose rows
have the largest cosine similarity with each key. Two backends:

- ``exact`` (default): ``torch.topk`` over the cosine scores. Pure, vmap- and compile-friendly,
  O(N) per query by nature; the oracle the others are tested against.
- ``faiss``: a ``torch.library.custom_op`` (``memfn::faiss_nearest_cells``) with a fake kernel and
  a vmap rule, so compiled graphs keep no graph break. Rows are normalised the way
  :func:`memfn.numerics.cosine_similarity` normalises them and searched by inner product, so a flat
  index ranks exactly like the exact backend. ``ivf`` (``num_lists`` lists, ``index_checks`` probed)
  and ``hnsw`` (``index_checks`` = efSearch) are approximate; their recall is measured by
  ``benchmarks/knn_recall.py``.

Selection carries no gradient (the positions are integers); gradients reach the memory through
the rows the caller gathers at those positions.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from memfn._validation import one_of, positive_int
from memfn.numerics import COSINE_EPS, cosine_similarity

KNN_BACKENDS = ("exact", "faiss")
FAISS_INDEXES = ("flat", "ivf", "hnsw")
#: Neighbours per node of an HNSW graph (faiss's ``M``).
HNSW_NEIGHBOURS = 32


class KNNConfig(NamedTuple):
    """A validated nearest-neighbour configuration (static: it is closed over, never traced).

    Examples:
        >>> memfn.sparse.knn.knn_config(nr_cells=1000)
        KNNConfig(backend='exact', index='flat', num_lists=10, index_checks=32)
    """

    backend: str = "exact"
    index: str = "flat"
    num_lists: int = 1
    index_checks: int = 1


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

    Examples:
        >>> memfn.sparse.knn.knn_config(nr_cells=1000, index="flat").num_lists  # faiss's options need knn="faiss"
        10
    """
    one_of("knn", knn, KNN_BACKENDS)
    one_of("index", index, FAISS_INDEXES)
    if knn == "exact" and (index != "flat" or num_lists is not None or index_checks is not None):
        raise ValueError(
            "index, num_lists and index_checks configure the faiss backend; pass knn='faiss' to use them "
            f"(got knn='exact', index={index!r}, num_lists={num_lists!r}, index_checks={index_checks!r})"
        )
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


def nearest_cells(memory: Tensor, keys: Tensor, k: int, config: KNNConfig = EXACT) -> Tensor:
    """Positions of the ``k`` rows of ``memory`` most cosine-similar to each key, best first.

    memory ``[N, W]``, keys ``[H, W]`` -> ``[H, K]`` (int64). Broadcasts over leading batch axes.

    Examples:
        >>> memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> memfn.sparse.knn.nearest_cells(memory, torch.tensor([[1.0, 0.1]]), k=2)
        tensor([[0, 2]])
    """
    memory, keys = memory.detach(), keys.detach()
    if config.backend == "exact":
        # Ties (e.g. the all-zero initial memory) go to the lower index on CPU: deterministic.
        return torch.topk(cosine_similarity(keys, memory), k, dim=-1).indices
    lead = torch.broadcast_shapes(memory.shape[:-2], keys.shape[:-2])
    memory = memory.expand(*lead, *memory.shape[-2:])
    keys = keys.expand(*lead, *keys.shape[-2:])
    return _faiss_op(memory, keys, k, config.index, config.num_lists, config.index_checks)


def searchable_rows(rows: Tensor) -> np.ndarray:
    """Rows as faiss indexes them: float32 on the CPU, normalised as the cosine normalises them (eps
    inside the root), so inner products rank like cosine similarities. (Keys need no normalising:
    one key's norm is a constant.)"""
    rows = rows.detach() / torch.sqrt((rows.detach() * rows.detach()).sum(-1, keepdim=True) + COSINE_EPS)
    return rows.to("cpu", torch.float32).contiguous().numpy()


def _require_faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - exercised only without faiss installed
        raise ImportError(
            "knn='faiss' needs the faiss package: pip install -e '.[faiss]' (CPU) or -e '.[gpu]' (CUDA), "
            "in a memfn checkout"
        ) from err
    return faiss


@torch.library.custom_op("memfn::faiss_nearest_cells", mutates_args=())
def _faiss_op(memory: Tensor, keys: Tensor, k: int, index: str, num_lists: int, index_checks: int) -> Tensor:
    faiss = _require_faiss()
    lead = memory.shape[:-2]
    n, w = memory.shape[-2:]
    if memory.numel() == 0:  # an empty batch: nothing to search
        return torch.empty(*lead, keys.shape[-2], k, dtype=torch.long, device=memory.device)
    rows = searchable_rows(memory.reshape(-1, n, w))
    queries = keys.reshape(rows.shape[0], -1, w).to("cpu", torch.float32).contiguous().numpy()
    out = np.empty((rows.shape[0], queries.shape[1], k), dtype=np.int64)
    for b in range(rows.shape[0]):
        built = _build_index(faiss, rows[b], index, num_lists, index_checks, memory.device)
        _, labels = built.search(queries[b], k)
        out[b] = _fill_missing(labels)
    return torch.from_numpy(out).to(memory.device).reshape(*lead, queries.shape[1], k)


@_faiss_op.register_fake
def _(memory: Tensor, keys: Tensor, k: int, index: str, num_lists: int, index_checks: int) -> Tensor:
    return keys.new_empty(*keys.shape[:-1], k, dtype=torch.long)


def _faiss_vmap(info, in_dims, memory, keys, k, index, num_lists, index_checks):
    memory, keys = (
        t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
        for t, d in ((memory, in_dims[0]), (keys, in_dims[1]))
    )
    return _faiss_op(memory, keys, k, index, num_lists, index_checks), 0


torch.library.register_vmap(_faiss_op, _faiss_vmap)


def _fill_missing(labels: np.ndarray) -> np.ndarray:
    """An IVF search probing few lists can return fewer than k hits (label -1). Repeat the best hit
    there: the readers mask repeated positions, so a missing hit simply gets no weight."""
    best = np.where(labels[:, :1] >= 0, labels[:, :1], 0)
    return np.where(labels >= 0, labels, best)


_gpu_resources: dict[int, object] = {}
_gpu_lock = threading.Lock()


def _gpu_resources_for(faiss, device: torch.device):
    """One ``StandardGpuResources`` per CUDA device, on the tensor's device (not always GPU 0)."""
    index = torch.cuda.current_device() if device.index is None else device.index
    with _gpu_lock:
        if index not in _gpu_resources:
            _gpu_resources[index] = faiss.StandardGpuResources()
        return _gpu_resources[index], index


def _build_index(faiss, rows: np.ndarray, index: str, num_lists: int, index_checks: int, device: torch.device):
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
        built.nprobe = index_checks
    if on_gpu:
        resources, gpu = _gpu_resources_for(faiss, device)
        built = faiss.index_cpu_to_gpu(resources, gpu, built)
    built.add(rows)
    return built


__all__ = ["FAISS_INDEXES", "KNNConfig", "KNN_BACKENDS", "knn_config", "nearest_cells"]
