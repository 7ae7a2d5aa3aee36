"""SAM and SDNC pure memories: invariants (hypothesis), dense equivalences, gradients, bad input,
and regressions for the pytorch-dnc defects listed in design.md section 4."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import memfn
from memfn import addressing as A
from memfn._resources import is_lazy_zeros
from memfn.sparse import addressing as S
from memfn.sparse import sam, split_sam_interface, usage
from memfn.sparse._sdnc import sdnc
from memfn.sparse.knn import knn_config, nearest_cells

seeds = st.integers(0, 2**31 - 1)


@st.composite
def sparse_sizes(draw, temporal: bool = False):
    n = draw(st.integers(2, 16))
    size = {
        "nr_cells": n,
        "cell_size": draw(st.integers(1, 5)),
        "read_heads": draw(st.integers(1, 3)),
        "sparse_reads": draw(st.integers(1, n)),
    }
    if temporal:
        size["temporal_reads"] = draw(st.integers(1, n))
    return size


def _xis(mem, seed: int, steps: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(mem.interface_size, generator=g, dtype=torch.float64) for _ in range(steps)]


def _run(mem, seed: int, steps: int, scale: float = 3.0):
    """States after each of ``steps`` random steps (the first entry is the initial state)."""
    states = [mem.init(torch.float64)]
    for xi in _xis(mem, seed, steps, scale):
        states.append(mem.step(states[-1], xi)[1])
    return states


def _memories():
    return st.one_of(sparse_sizes().map(lambda s: sam(**s)), sparse_sizes(temporal=True).map(lambda s: sdnc(**s)))


# -- SAM and SDNC invariants ------------------------------------------------------------------------


@given(_memories(), seeds, st.integers(1, 8))
def test_read_weights_are_a_distribution_over_distinct_candidates(mem, seed, steps):
    for state in _run(mem, seed, steps)[1:]:
        w = state.read_weights
        assert (w >= 0).all()
        if "link_matrix" in state._fields:
            assert (w.sum(-1) <= 1 + 1e-9).all()  # modes mix content (a distribution) with links (<= 1)
        else:
            torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
            assert not (S.repeated_positions(state.read_positions) & (w > 0)).any()


@given(_memories(), seeds, st.integers(1, 8))
def test_only_the_written_rows_change(mem, seed, steps):
    states = _run(mem, seed, steps)
    for before, after in zip(states, states[1:]):
        changed = (before.memory != after.memory).any(-1).nonzero().flatten()
        slots = after.write_positions.numel()  # R * P + 1 (P = K for SAM)
        assert changed.numel() <= slots
        assert set(changed.tolist()) <= set(after.write_positions.tolist())


@given(_memories(), seeds, st.integers(0, 8))
def test_the_least_used_cell_is_written_and_is_the_oldest_access(mem, seed, steps):
    state = _run(mem, seed, steps)[-1]
    xi = _xis(mem, seed + 1, 1)[0]
    _, after = mem.step(state, xi)
    lru = after.write_positions[-1]
    assert state.last_access[lru] == state.last_access.min()
    assert lru == (state.last_access == state.last_access.min()).nonzero()[0, 0]  # ties: lowest index


@given(_memories(), seeds, st.integers(1, 8))
def test_usage_counts_steps_since_a_non_negligible_access(mem, seed, steps):
    states = _run(mem, seed, steps)
    for before, after in zip(states, states[1:]):
        positions = torch.cat([after.write_positions, after.read_positions.flatten()])
        weights = torch.cat([after.write_weights, after.read_weights.flatten()])
        total = S.dense_weights(positions, weights, after.memory.shape[0])
        accessed = total > S.ACCESS_THRESHOLD
        assert (usage(after)[accessed] == 0).all()
        assert (usage(after)[~accessed] == usage(before)[~accessed] + 1).all()
        assert after.time == before.time + 1


def test_the_least_used_row_alone_is_erased_when_nothing_is_written():
    # pytorch-dnc's LRU choice could erase several cells; with the write gate closed exactly one
    # row (the least-used one) changes, and it becomes zero.
    mem = sam(nr_cells=8, cell_size=3, read_heads=2, sparse_reads=2)
    state = mem.init(torch.float64)._replace(memory=torch.randn(8, 3, dtype=torch.float64))
    state = state._replace(last_access=torch.tensor([5, 4, 3, 1, 6, 7, 2, 8]))
    xi = torch.randn(mem.interface_size, dtype=torch.float64)
    xi[-1] = -1e4  # write gate alpha = sigmoid(-1e4) = 0
    _, after = mem.step(state, xi)
    changed = (after.memory != state.memory).any(-1).nonzero().flatten().tolist()
    assert changed == [3] and (after.memory[3] == 0).all()


def test_sam_with_k_equal_n_reads_like_dense_content_addressing():
    n, w, r = 9, 4, 3
    mem = sam(nr_cells=n, cell_size=w, read_heads=r, sparse_reads=n)
    state = mem.init(torch.float64)._replace(memory=torch.randn(n, w, dtype=torch.float64))
    xi = torch.randn(mem.interface_size, dtype=torch.float64)
    xi[-1] = -1e4  # no write: the memory read is the memory given, minus the erased least-used row
    reads, after = mem.step(state, xi)
    io = split_sam_interface(xi, r, w)
    dense = A.content_weights(after.memory, io.read_keys, io.read_strengths)
    torch.testing.assert_close(S.dense_weights(after.read_positions, after.read_weights, n), dense)
    torch.testing.assert_close(reads, A.read_vectors(after.memory, dense))


def test_read_strength_sharpens_the_read():
    # pytorch-dnc's sparse reads had no strength; here the strength is the softmax temperature.
    n, w = 16, 4
    memory = torch.randn(n, w, dtype=torch.float64)
    keys = torch.randn(1, w, dtype=torch.float64)
    positions = nearest_cells(memory, keys, 4)
    rows = S.gather_rows(memory, positions)
    soft = S.sparse_content_weights(rows, keys, torch.tensor([1.0], dtype=torch.float64), positions)
    sharp = S.sparse_content_weights(rows, keys, torch.tensor([50.0], dtype=torch.float64), positions)
    assert sharp.max() > soft.max() and sharp[0, 0] == sharp.max()


def test_repeated_candidates_get_no_weight_and_finite_gradients():
    # Approximate search can return a cell twice (faiss fills missing hits with the best one).
    memory = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    strengths = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    positions = torch.tensor([[3, 3, 5, 3], [1, 2, 1, 1]])
    weights = S.sparse_content_weights(S.gather_rows(memory, positions), keys, strengths, positions)
    assert (weights[0, 1] == 0) & (weights[0, 3] == 0) & (weights[1, 2:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, dtype=torch.float64))
    grads = torch.autograd.grad(weights[:, 0].sum(), (memory, keys, strengths))
    assert all(torch.isfinite(g).all() for g in grads)


def test_heads_read_independently():
    # pytorch-dnc multiplied per-head weights across heads; changing one head's key must not move another's.
    mem = sam(nr_cells=12, cell_size=4, read_heads=2, sparse_reads=3)
    state = mem.init(torch.float64)._replace(memory=torch.randn(12, 4, dtype=torch.float64))
    xi = torch.randn(mem.interface_size, dtype=torch.float64)
    other = xi.clone()
    other[4:8] = torch.randn(4, dtype=torch.float64)  # head 1's key (keys are the first R * W entries)
    a, sa = mem.step(state, xi)
    b, sb = mem.step(state, other)
    torch.testing.assert_close(a[0], b[0])
    assert (sa.read_positions[0] == sb.read_positions[0]).all() and not torch.allclose(a[1], b[1])


def test_step_counters_are_per_example():
    # pytorch-dnc kept counters on the module and let batch element 0 decide for the whole batch.
    mem = sam(nr_cells=10, cell_size=3, read_heads=1, sparse_reads=2)
    xis = _xis(mem, 3, 5)
    long = mem.init(torch.float64)
    for xi in xis:
        _, long = mem.step(long, xi)
    fresh = mem.init(torch.float64)
    batch = memfn.batch_state(fresh, 2)
    batch = type(batch)(*(torch.stack([a, b]) for a, b in zip(long, fresh)))
    xi = _xis(mem, 4, 1)[0]
    reads, after = torch.func.vmap(mem.step)(batch, torch.stack([xi, xi]))
    for i, alone in enumerate((long, fresh)):
        r, s = mem.step(alone, xi)
        torch.testing.assert_close(reads[i], r)
        assert after.time[i] == s.time and (after.last_access[i] == s.last_access).all()


def test_large_memories_start_lazily_zero_in_every_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        state = sam(100_000, 32, 1, 1).init(dtype)
        assert state.memory.dtype == dtype and state.memory.shape == (100_000, 32)
        assert not state.memory.any() and is_lazy_zeros(state.memory)


def test_no_state_leaf_grows_with_n_squared():
    # pytorch-dnc's constructors allocated a dense N x N matrix (17 GB at 65,536 cells).
    n = 65_536
    for mem in (sam(n, 32, 4, 4), sdnc(n, 32, 4, 4, 4)):
        state = mem.init()
        assert max(t.numel() for t in state) <= n * 32


# -- SDNC links ---------------------------------------------------------------------------------------


@given(sparse_sizes(temporal=True), seeds, st.integers(1, 10))
def test_sdnc_links_stay_in_unit_interval_sparse_with_zero_diagonal(size, seed, steps):
    mem = sdnc(**size)
    n = size["nr_cells"]
    for state in _run(mem, seed, steps)[1:]:
        for pos, val in ((state.link_positions, state.link_matrix), (state.rev_link_positions, state.rev_link_matrix)):
            assert pos.shape == val.shape == (n, size["temporal_reads"])
            assert ((val >= 0) & (val <= 1 + 1e-9)).all()
            assert (val[pos == torch.arange(n).unsqueeze(-1)] == 0).all()
            dense = S.dense_weights(pos, val, n)
            assert (dense.sum(-1) <= 1 + 1e-9).all()
        assert (state.precedence >= 0).all() and state.precedence.sum() <= 1 + 1e-9


@given(st.integers(2, 9), st.integers(1, 3), st.integers(1, 3), seeds, st.integers(1, 12))
def test_sdnc_with_l_equal_n_follows_the_dense_link_recursion(n, r, k, seed, steps):
    mem = sdnc(nr_cells=n, cell_size=3, read_heads=r, sparse_reads=min(k, n), temporal_reads=n)
    link = torch.zeros(n, n, dtype=torch.float64)
    prec = torch.zeros(n, dtype=torch.float64)
    before = mem.init(torch.float64)
    for xi in _xis(mem, seed, steps):
        _, state = mem.step(before, xi)
        w = S.dense_weights(state.write_positions, state.write_weights, n)
        link, prec = A.link_matrix(link, prec, w), A.precedence(prec, w)
        torch.testing.assert_close(S.dense_weights(state.link_positions, state.link_matrix, n), link)
        torch.testing.assert_close(S.dense_weights(state.rev_link_positions, state.rev_link_matrix, n), link.T)
        torch.testing.assert_close(S.dense_weights(state.precedence_positions, state.precedence, n), prec)
        # Temporal reads: f = L w^r_{t-1}, b = L^T w^r_{t-1} (nothing truncated with L = N). Read
        # slots: backward (L), forward (L), content (K).
        fwd, bwd = A.forward_backward_read_weights(link, S.dense_weights(before.read_positions, before.read_weights, n))
        modes = torch.softmax(xi[-3 * r :].reshape(r, 3), -1)
        pos, val = state.read_positions, state.read_weights
        torch.testing.assert_close(S.dense_weights(pos[:, :n], val[:, :n], n), modes[:, :1] * bwd)
        torch.testing.assert_close(S.dense_weights(pos[:, n : 2 * n], val[:, n : 2 * n], n), modes[:, 1:2] * fwd)
        before = state


def test_sdnc_read_slots_are_backward_forward_then_content():
    # pytorch-dnc sliced its temporal positions off by one; here the content slots are exactly the
    # nearest cells of the keys.
    n, w, r, k, links = 20, 4, 2, 3, 2
    mem = sdnc(nr_cells=n, cell_size=w, read_heads=r, sparse_reads=k, temporal_reads=links)
    state = _run(mem, 5, 6)[-1]
    xi = _xis(mem, 6, 1)[0]
    _, after = mem.step(state, xi)
    io = split_sam_interface(xi[: -3 * r], r, w)
    expected = nearest_cells(after.memory, io.read_keys, k)
    assert (after.read_positions[:, 2 * links :] == expected).all()


# -- gradients ----------------------------------------------------------------------------------------


def test_sam_gradcheck_float64():
    mem = sam(6, 3, 2, 3)
    state = _run(mem, 11, 4)[-1]
    memory = (state.memory + 0.1 * torch.randn_like(state.memory)).requires_grad_()
    weights = state.read_weights.clone().requires_grad_()
    xi = _xis(mem, 12, 1)[0].requires_grad_()

    def f(memory, weights, xi):
        reads, after = mem.step(state._replace(memory=memory, read_weights=weights), xi)
        # The dense read weighting: slot order may change under a perturbation, the weighting may not.
        return reads, after.memory, S.dense_weights(after.read_positions, after.read_weights, 6)

    assert torch.autograd.gradcheck(f, (memory, weights, xi))


def test_sdnc_gradcheck_float64_off_the_link_path():
    # As in the paper, no gradient passes through the sparse links: the gates and the previous
    # read weights also move the links, which finite differences would see. Everything else is
    # checked: memory, keys, strengths, write vector, read modes. With L = N nothing is truncated.
    n, r, w = 6, 2, 3
    mem = sdnc(n, w, r, 2, n)
    state = _run(mem, 11, 4)[-1]
    memory = (state.memory + 0.1 * torch.randn_like(state.memory)).requires_grad_()
    xi = _xis(mem, 12, 1)[0]
    gates = slice(r * w + r + w, r * w + r + w + 2)
    free = torch.cat([xi[: gates.start], xi[gates.stop :]]).requires_grad_()

    def f(memory, free):
        full = torch.cat([free[: gates.start], xi[gates], free[gates.start :]])
        reads, after = mem.step(state._replace(memory=memory), full)
        return reads, after.memory, S.dense_weights(after.read_positions, after.read_weights, n)

    assert torch.autograd.gradcheck(f, (memory, free))
    _, after = mem.step(state, xi.requires_grad_())
    assert not any(t.requires_grad for t in (after.link_matrix, after.rev_link_matrix, after.precedence))


@pytest.mark.parametrize("factory", [lambda: sam(8, 4, 2, 3), lambda: sdnc(8, 4, 2, 3, 2)], ids=["sam", "sdnc"])
def test_gradients_finite_from_zero_memory_over_a_long_run(factory):
    # pytorch-dnc's SAM/SDNC gradients grew ~1.6x per step backwards and were NaN from ~256 steps.
    mem = factory()
    g = torch.Generator().manual_seed(0)
    xis = torch.randn(300, mem.interface_size, generator=g).requires_grad_()
    state, total = mem.init(), 0.0
    for xi in xis:
        reads, state = mem.step(state, xi)
        total = total + reads.square().sum()
    (grad,) = torch.autograd.grad(total, xis)
    assert torch.isfinite(grad).all()
    assert grad[:10].abs().max() < 1e3 * grad[-10:].abs().max() + 1e-3


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: sam(10, 4, 2, sparse_reads=0), "sparse_reads must be an integer >= 1"),
        (lambda: sam(10, 4, 2, sparse_reads=11), r"sparse_reads must be in \[1, nr_cells=10\], got 11"),
        (lambda: sdnc(10, 4, 2, temporal_reads=0), "temporal_reads must be an integer >= 1"),
        (lambda: sdnc(10, 4, 2, temporal_reads=11), r"temporal_reads must be in \[1, nr_cells=10\]"),
        (lambda: sam(10, 4, 2, knn="annoy"), "knn must be one of 'auto', 'exact', 'faiss'; got 'annoy'"),
        (lambda: sam(10, 4, 2, knn="faiss", index="kd"), "index must be one of 'flat', 'ivf', 'hnsw'"),
        (lambda: sam(10, 4, 2, knn="faiss", index="ivf", num_lists=11), r"num_lists must be in \[1, nr_cells=10\]"),
        (lambda: sam(100, 4, 2, knn="faiss", index="ivf", num_lists=4, index_checks=5), r"\[1, num_lists=4\]"),
        (lambda: sam(10, 4, 2, index="ivf"), "pass knn='faiss'"),
        (lambda: sam(0, 4, 2), "nr_cells must be an integer >= 1"),
    ],
)
def test_bad_configuration_raises_a_value_error_naming_it(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_interface_vector():
    mem = sam(10, 4, 2)
    with pytest.raises(ValueError, match=f"interface_size={mem.interface_size}"):
        mem.step(mem.init(), torch.zeros(3))


def test_default_backend_needs_no_faiss_and_faiss_missing_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # "import faiss" now raises ImportError
    sam(10, 4, 2)  # the exact default never imports faiss
    with pytest.raises(ImportError, match=r"pip install -e '\.\[faiss\]' \(CPU\)"):
        knn_config(10, "faiss")
