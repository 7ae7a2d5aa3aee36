"""Every public pure function under vmap (equals a Python loop) and torch.compile (equals eager,
compiles with fullgraph=True, and does not recompile on a second call with new values)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import optree
import pytest
import torch

import memfn
from memfn import addressing as A
from memfn import numerics as NUM
from memfn.sparse import _links as ST
from memfn.sparse import addressing as S
from memfn.sparse.knn import knn_config, nearest_cells

N, W, R, B = 7, 5, 3, 4


def _dist(*shape):
    return torch.softmax(torch.randn(*shape), -1) * torch.rand(*shape[:-1], 1)


def _cell_case():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    cell = memfn.memory_cell(memfn.lstm(2 + mem.read_size, 6, num_layers=2), mem, 2, 2)
    params = cell.init_params()
    state = memfn.run(memfn.batched_step(cell), params, memfn.batch_state(cell.init_state(), 1), torch.randn(3, 1, 2))[
        1
    ]
    state = optree.tree_map(lambda t: t[0], state)
    return functools.partial(cell.step, params), lambda: (state, torch.randn(2))


def _dnc_case(**options):
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R, **options)
    state = mem.init()
    for _ in range(3):
        _, state = mem.step(state, torch.randn(mem.interface_size))
    return mem.step, lambda: (state, torch.randn(mem.interface_size))


def _sparse_case(mem):
    state = mem.init()
    for _ in range(3):
        _, state = mem.step(state, torch.randn(mem.interface_size))
    return mem.step, lambda: (state._replace(memory=state.memory + torch.randn(N, W)), torch.randn(mem.interface_size))


def _pos(*shape):
    return torch.randint(0, N, shape)


def _controller_case(kind):
    ctrl = memfn.controller(kind, 4, 6, num_layers=2)
    params = ctrl.init_params()
    return functools.partial(ctrl.step, params), lambda: (
        type(ctrl.init_state())(*(torch.randn(2, 6) for _ in ctrl.init_state())),
        torch.randn(4),
    )


# name -> (function of one example, factory of one example's inputs)
CASES: dict[str, tuple[Callable, Callable]] = {
    "oneplus": (NUM.oneplus, lambda: (torch.randn(N),)),
    "cosine_similarity": (NUM.cosine_similarity, lambda: (torch.randn(R, W), torch.randn(N, W))),
    "weighted_softmax": (NUM.weighted_softmax, lambda: (torch.randn(R, N), torch.rand(R) * 5)),
    "exclusive_cumprod": (NUM.exclusive_cumprod, lambda: (torch.rand(N),)),
    "content_weights": (A.content_weights, lambda: (torch.randn(N, W), torch.randn(R, W), 1 + torch.rand(R))),
    "retention": (A.retention, lambda: (torch.rand(R), _dist(R, N))),
    "usage": (A.usage, lambda: (torch.rand(N), _dist(N), torch.rand(N))),
    "allocation_weights": (A.allocation_weights, lambda: (torch.rand(N),)),
    "write_weights": (A.write_weights, lambda: (_dist(N), _dist(N), torch.rand(1), torch.rand(1))),
    "updated_memory": (A.updated_memory, lambda: (torch.randn(N, W), _dist(N), torch.rand(W), torch.randn(W))),
    "precedence": (A.precedence, lambda: (_dist(N), _dist(N))),
    "link_matrix": (A.link_matrix, lambda: (torch.rand(N, N) / N, _dist(N), _dist(N))),
    "forward_read_weights": (
        functools.partial(A.directional_read_weights, forward=True),
        lambda: (torch.rand(N, N) / N, _dist(R, N)),
    ),
    "backward_read_weights": (
        functools.partial(A.directional_read_weights, forward=False),
        lambda: (torch.rand(N, N) / N, _dist(R, N)),
    ),
    "forward_backward_read_weights": (
        A.forward_backward_read_weights,
        lambda: (torch.rand(N, N) / N, _dist(R, N)),
    ),
    "read_weights": (A.read_weights, lambda: (_dist(R, N), _dist(R, N), _dist(R, N), _dist(R, 3))),
    "read_vectors": (A.read_vectors, lambda: (torch.randn(N, W), _dist(R, N))),
    "split_dnc_interface": (
        # The fields of options left off are None (vmap returns tensors only): compare the others.
        lambda xi: tuple(f for f in memfn.split_dnc_interface(xi, read_heads=R, cell_size=W) if f is not None),
        lambda: (torch.randn(memfn.dnc_interface_size(R, W)),),
    ),
    "dnc.step": _dnc_case(),
    "dnc[improved].step": _dnc_case(masking=True, deallocation=True, link_sharpness=True, write_heads=2),
    "masked_content_weights": (
        A.masked_content_weights,
        lambda: (torch.randn(N, W), torch.randn(R, W), 1 + torch.rand(R), torch.rand(R, W)),
    ),
    "deallocated_memory": (A.deallocated_memory, lambda: (torch.randn(N, W), torch.rand(N))),
    "sharpened_weights": (A.sharpened_weights, lambda: (_dist(R, N) * (torch.rand(R, N) > 0.3), 1 + torch.rand(R))),
    "combined_write_weights": (A.combined_write_weights, lambda: (_dist(2, N),)),
    "multi_write_allocation_weights": (A.multi_write_allocation_weights, lambda: (torch.rand(N), torch.rand(2))),
    "multi_updated_memory": (
        A.multi_updated_memory,
        lambda: (torch.randn(N, W), _dist(2, N), torch.rand(2, W), torch.randn(2, W)),
    ),
    "multi_forward_backward_read_weights": (
        A.multi_forward_backward_read_weights,
        lambda: (torch.rand(2, N, N) / N, _dist(R, N)),
    ),
    "multi_read_weights": (A.multi_read_weights, lambda: (_dist(R, N), _dist(R, 2, N), _dist(R, 2, N), _dist(R, 5))),
    "split_dnc_interface[improved]": (
        functools.partial(
            memfn.split_dnc_interface, read_heads=R, cell_size=W, write_heads=2, masking=True, link_sharpness=True
        ),
        lambda: (torch.randn(memfn.dnc_interface_size(R, W, 2, True, True)),),
    ),
    "sam.step": _sparse_case(memfn.sam(nr_cells=N, cell_size=W, read_heads=R, sparse_reads=3)),
    "sdnc.step": _sparse_case(memfn.sdnc(nr_cells=N, cell_size=W, read_heads=R, sparse_reads=2, temporal_reads=2)),
    "sam[masking].step": _sparse_case(memfn.sam(nr_cells=N, cell_size=W, read_heads=R, sparse_reads=3, masking=True)),
    "sdnc[improved].step": _sparse_case(
        memfn.sdnc(
            nr_cells=N, cell_size=W, read_heads=R, sparse_reads=2, temporal_reads=2, masking=True, link_sharpness=True
        )
    ),
    "masked_cosine_similarity": (
        NUM.masked_cosine_similarity,
        lambda: (torch.randn(R, W), torch.randn(R, 3, W), torch.rand(R, W)),
    ),
    "sparse_content_weights[masked]": (
        S.sparse_content_weights,
        lambda: (torch.randn(R, 3, W), torch.randn(R, W), 1 + torch.rand(R), _pos(R, 3), torch.rand(R, W)),
    ),
    "temporal_read_slots[sharpness]": (
        lambda *args: ST.temporal_read_slots(*args[:7], keep=2, sharpness=args[7:]),
        lambda: (
            _pos(N, 2),
            torch.rand(N, 2) / 2,
            _pos(N, 2),
            torch.rand(N, 2) / 2,
            _pos(R, 3),
            _dist(R, 3),
            _dist(R, 3),
            1 + torch.rand(R),
            1 + torch.rand(R),
        ),
    ),
    "nearest_cells": (functools.partial(nearest_cells, k=3), lambda: (torch.randn(N, W), torch.randn(R, W))),
    "nearest_cells[faiss]": (
        functools.partial(nearest_cells, k=3, config=knn_config(N, "faiss")),
        lambda: (torch.randn(N, W), torch.randn(R, W)),
    ),
    "gather_rows": (S.gather_rows, lambda: (torch.randn(N, W), _pos(R, 3))),
    "repeated_positions": (S.repeated_positions, lambda: (_pos(6),)),
    "weights_at": (S.weights_at, lambda: (_pos(4), _pos(6), torch.rand(6))),
    "coalesced": (S.coalesced, lambda: (_pos(6), torch.rand(6))),
    "top_slots": (functools.partial(S.top_slots, k=3), lambda: (_pos(R, 6), torch.rand(R, 6))),
    "sparse_content_weights": (
        S.sparse_content_weights,
        lambda: (torch.randn(R, 3, W), torch.randn(R, W), 1 + torch.rand(R), _pos(R, 3)),
    ),
    "least_recently_used": (S.least_recently_used, lambda: (_pos(N),)),
    "sparse_write_weights": (
        S.sparse_write_weights,
        lambda: (_pos(R, 3), _dist(R, 3), _pos(), torch.rand(1), torch.rand(1)),
    ),
    "sparse_updated_memory": (
        S.sparse_updated_memory,
        lambda: (torch.randn(N, W), _pos(), _pos(4), torch.rand(4), torch.randn(W)),
    ),
    "sparse_read_vectors": (S.sparse_read_vectors, lambda: (torch.randn(R, 3, W), _dist(R, 3))),
    "last_access": (S.last_access, lambda: (_pos(N), _pos() + N, _pos(6), torch.rand(6) / 50)),
    "sparse_precedence": (
        functools.partial(ST.sparse_precedence, keep=3),
        lambda: (_pos(3), _dist(3), _pos(4), _dist(4)),
    ),
    "sparse_link_rows": (
        ST.sparse_link_rows,
        lambda: (
            _pos(N, 2),
            torch.rand(N, 2) / 2,
            _pos(N, 2),
            _pos(5),
            _pos(2),
            _dist(2),
            _pos(3),
            _dist(3),
            _pos(4),
            _dist(4),
        ),  # fmt: skip
    ),
    "sparse_directional_read_weights": (
        functools.partial(ST.sparse_directional_read_weights, keep=2),
        lambda: (_pos(N, 2), torch.rand(N, 2) / 2, _pos(R, 3), _dist(R, 3)),
    ),
    "lstm.step": _controller_case("lstm"),
    "gru.step": _controller_case("gru"),
    "rnn.step": _controller_case("rnn"),
    "memory_cell.step": _cell_case(),
}


def _stack(examples):
    return optree.tree_map(lambda *xs: torch.stack(xs), *examples)


def _assert_trees_close(actual, expected, **tol):
    a_leaves, a_def = optree.tree_flatten(actual)
    e_leaves, e_def = optree.tree_flatten(expected)
    assert a_def == e_def
    for a, e in zip(a_leaves, e_leaves):
        torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_equals_python_loop(name):
    fn, make = CASES[name]
    examples = [make() for _ in range(B)]
    looped = _stack([fn(*ex) for ex in examples])
    vmapped = torch.func.vmap(fn)(*_stack(examples))
    _assert_trees_close(vmapped, looped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broadcasting_equals_vmap(name):
    # The core also accepts leading batch axes directly: what the eager shells rely on.
    fn, make = CASES[name]
    batched = _stack([make() for _ in range(B)])
    _assert_trees_close(fn(*batched), torch.func.vmap(fn)(*batched), atol=1e-5, rtol=1e-5)


# Whole steps take 20-80 s each to compile here: the default run compiles the dense step and the
# small functions; the sparse steps, the cell and the link-row update compile under -m slow.
SLOW_TO_COMPILE = {
    "dnc[improved].step",
    "sam.step",
    "sdnc.step",
    "sam[masking].step",
    "sdnc[improved].step",
    "memory_cell.step",
    "sparse_link_rows",
    "nearest_cells[faiss]",
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_COMPILE else n for n in sorted(CASES)]
)
def test_compiled_vmap_equals_eager_without_recompiling(name):
    fn, make = CASES[name]
    torch._dynamo.reset()
    batched = torch.func.vmap(fn)
    compiled = torch.compile(batched, fullgraph=True)
    first = _stack([make() for _ in range(B)])
    _assert_trees_close(compiled(*first), batched(*first), atol=1e-5, rtol=1e-5)
    second = _stack([make() for _ in range(B)])
    with torch.compiler.set_stance("fail_on_recompile"):
        _assert_trees_close(compiled(*second), batched(*second), atol=1e-5, rtol=1e-5)
