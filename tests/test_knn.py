"""Nearest-neighbour backends: exact top-k is the oracle; faiss flat equals it, IVF probing every
list equals it, approximate indexes are close; the faiss op vmaps, compiles and passes opcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memfn
from memfn.numerics import cosine_similarity
from memfn.sparse.knn import knn_config, nearest_cells

faiss = pytest.importorskip("faiss")


def _memory_and_keys(n=300, w=16, h=4, batch=()):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*batch, n, w, generator=g), torch.randn(*batch, h, w, generator=g)


def test_exact_is_the_top_k_of_the_cosine():
    memory, keys = _memory_and_keys()
    positions = nearest_cells(memory, keys, 5)
    scores = cosine_similarity(keys, memory)
    assert (positions == scores.argsort(-1, descending=True)[:, :5]).all()


def test_faiss_flat_equals_exact_positions_in_order():
    # pytorch-dnc's labels were off by one; a flat inner-product index over cosine-normalised rows
    # must rank exactly like the exact backend.
    memory, keys = _memory_and_keys(batch=(3,))
    exact = nearest_cells(memory, keys, 8)
    flat = nearest_cells(memory, keys, 8, knn_config(300, "faiss"))
    assert flat.dtype == torch.long and (flat == exact).all()


def test_faiss_flat_handles_zero_rows_and_float64():
    memory, keys = _memory_and_keys(n=20)
    memory = memory.double()
    memory[5:] = 0
    positions = nearest_cells(memory, keys.double(), 3, knn_config(20, "faiss"))
    assert ((positions >= 0) & (positions < 20)).all()


def test_ivf_probing_every_list_is_exact_and_is_trained_on_the_memory():
    # pytorch-dnc set a misspelt ``nprobes`` (so probed 1 list) and trained on random noise.
    memory, keys = _memory_and_keys(n=400)
    config = knn_config(400, "faiss", index="ivf", num_lists=8, index_checks=8)
    assert (nearest_cells(memory, keys, 6, config) == nearest_cells(memory, keys, 6)).all()


def test_ivf_with_fewer_than_100_cells_has_one_list_not_zero():
    config = knn_config(50, "faiss", index="ivf")
    assert config.num_lists == 1 and config.index_checks == 1
    memory, keys = _memory_and_keys(n=50)
    assert (nearest_cells(memory, keys, 4, config) == nearest_cells(memory, keys, 4)).all()


@pytest.mark.parametrize(
    "index, options, least", [("ivf", {"num_lists": 16, "index_checks": 4}, 0.7), ("hnsw", {}, 0.9)]
)
def test_approximate_indexes_have_high_recall(index, options, least):
    # Random 16-d Gaussians are a hard case for IVF (no cluster structure), probing 4 of 16 lists.
    memory, keys = _memory_and_keys(n=2000, w=16, h=32)
    exact = nearest_cells(memory, keys, 8)
    approx = nearest_cells(memory, keys, 8, knn_config(2000, "faiss", index=index, **options))
    recall = (approx.unsqueeze(-1) == exact.unsqueeze(-2)).any(-1).float().mean()
    assert recall > least


def test_missing_ivf_hits_repeat_the_best_one():
    # One probed list of a few cells cannot hold k hits: faiss returns -1, which must never reach
    # a gather. The repeats are masked by the sparse reads.
    memory, keys = _memory_and_keys(n=64)
    config = knn_config(64, "faiss", index="ivf", num_lists=32, index_checks=1)
    positions = nearest_cells(memory, keys, 16, config)
    assert ((positions >= 0) & (positions < 64)).all()


def test_faiss_op_under_vmap_equals_a_loop():
    memory, keys = _memory_and_keys(batch=(3,))
    config = knn_config(300, "faiss")
    vmapped = torch.func.vmap(lambda m, k: nearest_cells(m, k, 4, config))(memory, keys)
    looped = torch.stack([nearest_cells(memory[i], keys[i], 4, config) for i in range(3)])
    assert (vmapped == looped).all()
    shared = torch.func.vmap(lambda k: nearest_cells(memory[0], k, 4, config))(keys)
    assert (shared == torch.stack([nearest_cells(memory[0], keys[i], 4, config) for i in range(3)])).all()


def test_faiss_op_passes_opcheck():
    memory, keys = _memory_and_keys(batch=(2,))
    torch.library.opcheck(torch.ops.memfn.faiss_nearest_cells.default, (memory, keys, 4, "flat", 1, 1))


def test_compiled_sam_step_with_faiss_has_no_graph_break():
    mem = memfn.sam(64, 8, 2, 4, knn="faiss")
    state = memfn.batch_state(mem.init(), 3)
    for _ in range(3):
        _, state = torch.func.vmap(mem.step)(state, torch.randn(3, mem.interface_size))
    xi = torch.randn(3, mem.interface_size)
    compiled = torch.compile(torch.func.vmap(mem.step), fullgraph=True)
    reads, after = compiled(state, xi)
    eager_reads, eager = torch.func.vmap(mem.step)(state, xi)
    torch.testing.assert_close(reads, eager_reads)
    assert (after.read_positions == eager.read_positions).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not hasattr(faiss, "StandardGpuResources"),
                    reason="needs CUDA and faiss-gpu")  # fmt: skip
def test_faiss_gpu_search_runs_on_the_tensor_device():
    device = torch.device("cuda", torch.cuda.device_count() - 1)  # not hard-wired to GPU 0
    memory, keys = _memory_and_keys(batch=(2,))
    config = knn_config(300, "faiss")
    on_gpu = nearest_cells(memory.to(device), keys.to(device), 5, config)
    assert on_gpu.device == device and (on_gpu.cpu() == nearest_cells(memory, keys, 5)).all()


# -- the maintained index (fast path) -------------------------------------------------------------


def test_maintained_index_probing_every_list_follows_exact_search_step_by_step():
    from memfn.sparse._fast import SparseEngine

    n, b = 300, 2
    exact_mem = memfn.sam(n, 8, 2, 4)
    faiss_mem = memfn.sam(n, 8, 2, 4, knn="faiss", index="ivf", num_lists=3, index_checks=3)
    start = memfn.batch_state(exact_mem.init(), b)
    start = start._replace(memory=torch.randn(b, n, 8))  # every row written: all of them are indexed
    exact = SparseEngine(exact_mem.config, memfn.clone(start))
    approx = SparseEngine(faiss_mem.config, memfn.clone(start))
    se, sa = exact.initial_state(), approx.initial_state()
    with torch.no_grad():
        for _ in range(40):  # long enough for the quantiser to be retrained on rewritten rows
            xi = torch.randn(b, exact_mem.interface_size) * 2
            re, se = exact.step(se, xi)
            ra, sa = approx.step(sa, xi)
            assert (se.read_positions == sa.read_positions).all()
            torch.testing.assert_close(ra, re)
    assert all(index.count == n for index in approx.indexes)


def test_maintained_index_drops_zero_rows_and_retrains_as_it_grows():
    from memfn.sparse._ann_index import MaintainedIndex

    index = MaintainedIndex(nr_cells=1000, cell_size=4, num_lists=16, index_checks=16)
    rows = np.random.default_rng(0).standard_normal((1000, 4)).astype("float32")
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index.rebuild(rows[:0], np.arange(0))
    for start in range(0, 1000, 50):
        ids = np.arange(start, start + 50)
        index.update(ids, rows[ids], lambda end=start + 50: (rows[:end], np.arange(end)))
    assert index.count == 1000 and index.rebuilds > 3 and index.index.nlist > 1
    index.update(np.array([5, 7]), np.zeros((2, 4), dtype="float32"), lambda: None)  # erased rows leave
    assert index.count == 998 and not index.present[[5, 7]].any()
    hits = index.search(rows[[5, 9]], 3)
    assert 5 not in hits and hits[1, 0] == 9
