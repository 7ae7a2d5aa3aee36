"""One rule for candidates and ties (issue 14), checked on every backend.

The rule (memfn.sparse.knn): written (non-zero) rows only while at least K exist, else the lowest-index
unwritten rows fill the remaining slots after them; higher score first; equal scores to the lower
index; the score is the cosine computed in float64 and rounded to float32. Memories here hold
deliberate ties: zero rows, duplicated rows, rows orthogonal to a key, and small-integer rows whose
scores are either exactly equal or far apart (so "the same positions" is well defined).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import memfn
from memfn.sparse import knn as knn_module
from memfn.sparse._ann_index import MaintainedIndex
from memfn.sparse.knn import AUTO_EXACT_MAX_CELLS, knn_config, nearest_cells, searchable_rows, tie_scores

faiss = pytest.importorskip("faiss")


def rule_oracle(memory: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """The rule written out plainly: a Python sort of (not written, -score, index)."""
    scores = tie_scores(keys, memory)
    written = (memory != 0).any(-1)
    out = []
    for h in range(keys.shape[0]):
        order = sorted(range(memory.shape[0]), key=lambda i: (not bool(written[i]), -float(scores[h, i]), i))
        out.append(order[:k])
    return torch.tensor(out)


@st.composite
def tied_memories(draw):
    """A memory [N, W] with zero rows, duplicated rows and small-integer rows (exact scores), keys [H, W], K."""
    n = draw(st.integers(1, 40))
    w = draw(st.integers(1, 6))
    k = draw(st.integers(1, n))
    h = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["integer", "gaussian", "mixed"]))
    pool = rng.integers(-2, 3, size=(draw(st.integers(1, 6)), w)).astype(np.float64)
    if kind == "integer":
        rows = pool[rng.integers(0, len(pool), n)]  # few distinct rows: many duplicates and exact ties
    elif kind == "gaussian":
        rows = rng.standard_normal((n, w))
        dup = rng.random(n) < 0.4
        rows[dup] = rows[rng.integers(0, n, dup.sum())]  # duplicated rows (copied: they tie exactly)
    else:
        rows = np.where(rng.random((n, 1)) < 0.5, pool[rng.integers(0, len(pool), n)], rng.standard_normal((n, w)))
    zero = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    rows[zero] = 0
    keys = rng.integers(-2, 3, size=(h, w)).astype(np.float64)
    if draw(st.booleans()):
        keys = keys + 0.25 * rng.standard_normal((h, w))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return torch.from_numpy(rows).to(dtype), torch.from_numpy(keys).to(dtype), k


def maintained(memory: torch.Tensor, keys: torch.Tensor, k: int, lists: int) -> torch.Tensor:
    n, w = memory.shape
    index = MaintainedIndex(n, w, num_lists=lists, index_checks=lists)
    written = (memory != 0).any(-1)
    ids = torch.nonzero(written).squeeze(-1)
    index.rebuild(searchable_rows(memory[ids]), ids.numpy())
    if index.index is not None:
        index.index.nprobe = index.index.nlist  # probe every list
    return index.nearest(memory, keys, k)


@settings(max_examples=150)
@given(tied_memories())
def test_every_backend_picks_the_same_positions_in_the_same_order(case):
    memory, keys, k = case
    n = memory.shape[0]
    expected = rule_oracle(memory, keys, k)
    assert torch.equal(nearest_cells(memory, keys, k), expected)
    lists = max(1, min(4, n // 2))
    backends = {
        "flat": knn_config(n, "faiss"),
        "ivf, every list probed": knn_config(n, "faiss", "ivf", num_lists=lists, index_checks=lists),
        "hnsw, efSearch >= N": knn_config(n, "faiss", "hnsw", index_checks=max(64, 2 * n)),
    }
    for name, config in backends.items():
        assert torch.equal(nearest_cells(memory, keys, k, config), expected), name
    assert torch.equal(maintained(memory, keys, k, lists), expected), "maintained ivf"
    batched = torch.func.vmap(lambda m, q: nearest_cells(m, q, k))(memory.expand(2, -1, -1), keys.expand(2, -1, -1))
    assert torch.equal(batched[1], expected)


@settings(max_examples=30)
@given(tied_memories())
def test_cuda_picks_the_same_positions_as_cpu(case):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    memory, keys, k = case
    assert torch.equal(nearest_cells(memory.cuda(), keys.cuda(), k).cpu(), nearest_cells(memory, keys, k))


def test_a_fresh_memory_reads_its_lowest_rows_in_order():
    # torch.topk(torch.zeros(16), 3) gives [10, 11, 12] on CPU; 1,000 zeros [1, 3, 0, 2].
    for n, k in ((16, 3), (1000, 4)):
        memory, keys = torch.zeros(n, 8), torch.randn(2, 8)
        expected = torch.arange(k).expand(2, k)
        assert torch.equal(nearest_cells(memory, keys, k), expected)
        assert torch.equal(nearest_cells(memory, keys, k, knn_config(n, "faiss")), expected)
        assert torch.equal(maintained(memory, keys, k, 4), expected)


def test_written_rows_come_first_then_the_lowest_unwritten_ones():
    memory = torch.zeros(10, 2)
    memory[6] = torch.tensor([1.0, 0.0])
    memory[3] = torch.tensor([-1.0, 0.0])  # negative score, still before every unwritten row
    keys = torch.tensor([[1.0, 0.0]])
    assert nearest_cells(memory, keys, 4).tolist() == [[6, 3, 0, 1]]
    assert nearest_cells(memory, keys, 4, knn_config(10, "faiss")).tolist() == [[6, 3, 0, 1]]
    assert maintained(memory, keys, 4, 1).tolist() == [[6, 3, 0, 1]]


def test_duplicates_beyond_the_search_width_still_go_to_the_lowest_index():
    # 300 copies of the best row: faiss returns some 2k of them in an order of its own; the search
    # widens until the tie group is whole and the lowest indices win.
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(1000, 16, generator=g)
    copies = torch.randperm(1000, generator=g)[:300]
    key = torch.randn(1, 16, generator=g)
    memory[copies] = key[0] * 3
    expected = copies.sort().values[:5].unsqueeze(0)
    assert torch.equal(nearest_cells(memory, key, 5), expected)
    assert torch.equal(nearest_cells(memory, key, 5, knn_config(1000, "faiss")), expected)
    assert torch.equal(nearest_cells(memory, key, 5, knn_config(1000, "faiss", "ivf", 8, 8)), expected)
    assert torch.equal(maintained(memory, key, 5, 8), expected)


@pytest.mark.parametrize("model", ["sam", "sdnc"])
def test_exact_and_faiss_flat_give_the_same_reads_from_a_fresh_state(model):
    # The report: a 10-step rollout from a fresh state read different cells.
    make = memfn.sam if model == "sam" else memfn.sdnc
    exact, flat = make(64, 8, 2, 4), make(64, 8, 2, 4, knn="faiss")
    se = sf = memfn.batch_state(exact.init(), 3)
    for _ in range(10):
        xi = torch.randn(3, exact.interface_size)
        re, se = torch.func.vmap(exact.step)(se, xi)
        rf, sf = torch.func.vmap(flat.step)(sf, xi)
        assert torch.equal(se.read_positions, sf.read_positions)
        assert torch.equal(re, rf)


def test_fast_path_with_the_maintained_index_follows_exact_from_a_fresh_state():
    from memfn.sparse._fast import SparseEngine

    exact = memfn.sam(200, 8, 2, 4, knn="exact")
    ivf = memfn.sam(200, 8, 2, 4, knn="faiss", index="ivf", num_lists=2, index_checks=2)
    start = memfn.batch_state(exact.init(), 2)
    a = SparseEngine(exact.config, memfn.clone(start))
    b = SparseEngine(ivf.config, memfn.clone(start))
    sa, sb = a.initial_state(), b.initial_state()
    with torch.no_grad():
        for _ in range(30):
            xi = torch.randn(2, exact.interface_size)
            ra, sa = a.step(sa, xi)
            rb, sb = b.step(sb, xi)
            assert torch.equal(sa.read_positions, sb.read_positions)
            torch.testing.assert_close(ra, rb)


# -- knn="auto" -------------------------------------------------------------------------------------


def test_auto_is_exact_up_to_the_crossover_and_the_maintained_ivf_above():
    small, large = knn_config(AUTO_EXACT_MAX_CELLS, "auto"), knn_config(2 * AUTO_EXACT_MAX_CELLS, "auto")
    assert (small.backend, small.auto) == ("exact", True)
    assert (large.backend, large.index, large.auto) == ("faiss", "ivf", True)
    assert memfn.sam(64, 4, 1).config.knn.auto and memfn.sdnc(64, 4, 1).config.knn.auto
    assert memfn.SAM(4, 8, nr_cells=64, cell_size=4).pure_memory.config.knn.auto
    with pytest.raises(ValueError, match="knn='faiss'"):
        knn_config(100, "auto", index="hnsw")


def test_auto_above_the_crossover_searches_exactly_in_the_pure_step():
    # A per-step IVF (k-means on N rows) costs more than exact top-k: only the fast path uses the index.
    n = 2 * AUTO_EXACT_MAX_CELLS
    memory, keys = torch.randn(n, 4), torch.randn(2, 4)
    assert torch.equal(nearest_cells(memory, keys, 4, knn_config(n, "auto")), nearest_cells(memory, keys, 4))


def test_auto_without_faiss_falls_back_to_exact_and_warns_once(monkeypatch):
    monkeypatch.setattr(knn_module, "_faiss_available", lambda: False)
    monkeypatch.setattr(knn_module, "_warned_exact_fallback", False)
    with pytest.warns(UserWarning, match=r'pip install "memfn\[faiss\]"'):
        config = knn_config(2 * AUTO_EXACT_MAX_CELLS, "auto")
    assert config.backend == "exact" and config.auto
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_config(2 * AUTO_EXACT_MAX_CELLS, "auto")  # once only
        knn_config(AUTO_EXACT_MAX_CELLS, "auto")  # small memories never warn


@settings(max_examples=40)
@given(st.integers(0, 2**31 - 1), st.sampled_from([100, 2000]), st.sampled_from([torch.float32, torch.float64]))
def test_the_eager_float32_prefilter_gives_the_full_answer(seed, n, dtype):
    # The shells' eager fast path ranks the best k + 32 float32 candidates in float64; vmap and
    # compiled steps score every row in float64. Both must give the rule's answer.
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(n, 8, generator=g, dtype=dtype)
    memory[torch.randint(0, n, (n // 4,), generator=g)] = 0
    copies = torch.randint(0, n, (n // 4,), generator=g)
    memory[copies] = memory[copies[0]].clone()
    keys = torch.randn(4, 8, generator=g, dtype=dtype)
    if seed % 2:
        keys[0] = memory[copies[0]].clone()  # a tie group wider than the margin: the prefilter declines
    full = torch.func.vmap(lambda m: nearest_cells(m, keys, 6))(memory.unsqueeze(0))[0]
    assert torch.equal(nearest_cells(memory, keys, 6), full)
    assert torch.equal(full, rule_oracle(memory, keys, 6))


def test_the_prefilter_answers_where_scores_are_clear_and_declines_wide_ties():
    g = torch.Generator().manual_seed(0)
    memory, keys = torch.randn(2000, 8, generator=g), torch.randn(4, 8, generator=g)
    found = knn_module._prefiltered_exact(memory, keys, 6)
    assert found is not None and torch.equal(found, rule_oracle(memory, keys, 6))
    memory[100:200] = keys[2]  # 100 copies of head 2's best row
    assert knn_module._prefiltered_exact(memory, keys, 6) is None
    assert torch.equal(nearest_cells(memory, keys, 6)[2], torch.arange(100, 106))
