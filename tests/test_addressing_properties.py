"""Invariants of dense DNC addressing, over random sizes and reachable states (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import memfn
from memfn import addressing as A
from memfn.interface import split_dnc_interface
from memfn.testing import (
    check_allocation,
    check_distribution,
    check_link_matrix,
    check_unit_interval,
    memory_cases,
    memory_sizes,
    random_tensor,
    seeds,
    usage_vectors,
)

TOL = 1e-9
# Reached (and adversarially edited) float64 DNC states, and the next interface vector.
dense_cases = memory_cases(
    memfn.dnc, sizes=memory_sizes(max_cells=12, max_cell_size=6), dtypes=(torch.float64,), max_steps=6
)


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


@given(dense_cases)
def test_usage_stays_in_unit_interval(case):
    mem, state, xi = case.memory, case.state, case.xi
    _, new = mem.step(state, xi)
    assert (message := check_unit_interval(new.usage_vector, "usage", TOL)) is None, message


@given(usage_vectors())
def test_allocation_in_unit_interval_sums_at_most_one_and_favours_least_used(u):
    a = A.allocation_weights(u)
    assert (message := check_allocation(a, TOL)) is None, message
    # The largest allocation goes to a least-used cell (usages closer than eps count as ties).
    assert u[torch.argmax(a)] <= u.min() + A.ALLOCATION_EPS


@given(usage_vectors())
def test_allocation_of_free_memory_sums_to_about_one(u):
    a = A.allocation_weights(u * 0.0)
    torch.testing.assert_close(a.sum(), torch.tensor(1.0, dtype=a.dtype), atol=1e-5, rtol=0)


@given(dense_cases)
def test_write_weights_sum_at_most_write_gate(case):
    mem, state, xi = case.memory, case.state, case.xi
    _, new = mem.step(state, xi)
    n, w, r = new.memory.shape[0], new.memory.shape[1], new.read_weights.shape[0]
    gate = split_dnc_interface(xi, r, w).write_gate
    assert (new.write_weights >= 0).all()
    assert new.write_weights.sum() <= gate.squeeze() + TOL
    assert new.write_weights.shape == (1, n)


@given(dense_cases)
def test_precedence_in_unit_interval_sums_at_most_one(case):
    mem, state, xi = case.memory, case.state, case.xi
    _, new = mem.step(state, xi)
    assert (message := check_distribution(new.precedence, "precedence", TOL)) is None, message


@given(dense_cases)
def test_link_in_unit_interval_zero_diagonal_rows_and_columns_at_most_one(case):
    mem, state, xi = case.memory, case.state, case.xi
    _, new = mem.step(state, xi)
    assert (message := check_link_matrix(new.link_matrix[0], atol=1e-6)) is None, message
    assert (torch.diagonal(new.link_matrix[0]) == 0).all()  # exactly: the mask multiplies


@given(dense_cases)
def test_read_weights_rows_sum_at_most_one(case):
    mem, state, xi = case.memory, case.state, case.xi
    _, new = mem.step(state, xi)
    assert (message := check_distribution(new.read_weights, "read_weights", 1e-6)) is None, message


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


@given(dense_cases)
def test_read_vectors_are_convex_combinations_of_rows(case):
    mem, state, xi = case.memory, case.state, case.xi
    reads, new = mem.step(state, xi)
    torch.testing.assert_close(reads, new.read_weights @ new.memory)
    bound = new.memory.abs().max() * (1 + TOL) + TOL
    assert (reads.abs() <= bound).all()
