"""Invariants of dense DNC addressing, over random sizes and reachable states (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import memfn
from memfn import addressing as A
from memfn.interface import split_dnc_interface
from tests.strategies import dense_cases, random_tensor, seeds, usages

TOL = 1e-9


@given(st.integers(1, 12), st.integers(1, 6), st.integers(1, 4), seeds, st.sampled_from([0.0, 1.0, 10.0]))
def test_content_weights_are_distributions(n, w, h, seed, scale):
    memory = random_tensor(seed, n, w, scale=scale)
    keys = random_tensor(seed + 1, h, w)
    strengths = memfn.oneplus(random_tensor(seed + 2, h, scale=5.0))
    c = A.content_weights(memory, keys, strengths)
    assert c.shape == (h, n)
    assert torch.isfinite(c).all()
    assert (c >= 0).all()
    torch.testing.assert_close(c.sum(-1), torch.ones(h, dtype=c.dtype))


@given(dense_cases())
def test_usage_stays_in_unit_interval(case):
    mem, state, xi = case
    _, new = mem.step(state, xi)
    assert (new.usage_vector >= 0).all() and (new.usage_vector <= 1 + TOL).all()


@given(usages())
def test_allocation_in_unit_interval_sums_at_most_one_and_favours_least_used(u):
    a = A.allocation_weights(u)
    assert (a >= 0).all() and (a <= 1).all()
    assert a.sum() <= 1 + TOL
    # The largest allocation goes to a least-used cell (usages closer than eps count as ties).
    assert u[torch.argmax(a)] <= u.min() + A.ALLOCATION_EPS


@given(usages())
def test_allocation_of_free_memory_sums_to_about_one(u):
    a = A.allocation_weights(u * 0.0)
    torch.testing.assert_close(a.sum(), torch.tensor(1.0, dtype=a.dtype), atol=1e-5, rtol=0)


@given(dense_cases())
def test_write_weights_sum_at_most_write_gate(case):
    mem, state, xi = case
    _, new = mem.step(state, xi)
    n, w, r = new.memory.shape[0], new.memory.shape[1], new.read_weights.shape[0]
    gate = split_dnc_interface(xi, r, w).write_gate
    assert (new.write_weights >= 0).all()
    assert new.write_weights.sum() <= gate.squeeze() + TOL
    assert new.write_weights.shape == (1, n)


@given(dense_cases())
def test_precedence_in_unit_interval_sums_at_most_one(case):
    mem, state, xi = case
    _, new = mem.step(state, xi)
    p = new.precedence
    assert (p >= 0).all() and (p <= 1 + TOL).all()
    assert p.sum() <= 1 + TOL


@given(dense_cases())
def test_link_in_unit_interval_zero_diagonal_rows_and_columns_at_most_one(case):
    mem, state, xi = case
    _, new = mem.step(state, xi)
    link = new.link_matrix[0]
    assert (link >= -TOL).all() and (link <= 1 + TOL).all()
    assert (torch.diagonal(link) == 0).all()
    assert (link.sum(0) <= 1 + 1e-6).all()
    assert (link.sum(1) <= 1 + 1e-6).all()


@given(dense_cases())
def test_read_weights_rows_sum_at_most_one(case):
    mem, state, xi = case
    _, new = mem.step(state, xi)
    assert (new.read_weights >= -TOL).all()
    assert (new.read_weights.sum(-1) <= 1 + 1e-6).all()


@given(st.integers(1, 10), st.integers(1, 6), seeds)
def test_full_erase_at_fully_weighted_cell_leaves_write_vector(n, w, seed):
    memory = random_tensor(seed, n, w)
    cell = seed % n
    weights = torch.zeros(n, dtype=torch.float64)
    weights[cell] = 1.0
    v = random_tensor(seed + 1, w)
    new = A.updated_memory(memory, weights, torch.ones(w, dtype=torch.float64), v)
    torch.testing.assert_close(new[cell], v)
    others = torch.arange(n) != cell
    torch.testing.assert_close(new[others], memory[others])


@given(dense_cases())
def test_read_vectors_are_convex_combinations_of_rows(case):
    mem, state, xi = case
    reads, new = mem.step(state, xi)
    torch.testing.assert_close(reads, new.read_weights @ new.memory)
    bound = new.memory.abs().max() + TOL
    assert (reads.abs() <= bound).all()
