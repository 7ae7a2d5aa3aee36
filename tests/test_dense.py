"""The dense DNC memory: known transitions, zero-memory gradients, gradcheck, purity, bad input."""

from __future__ import annotations

import copy

import optree
import pytest
import torch
from hypothesis import given

import memfn
import memfn.compat
from memfn import addressing as A
from memfn.interface import BACKWARD, CONTENT, FORWARD
from memfn.testing import memory_cases, memory_sizes
from tests.interface_builder import OFF, ON, make_xi, read_mode_logits

N, W, R = 6, 4, 1


def dense_cases(max_steps: int = 6):
    """(memory, reached float64 state, next xi): moderate interface vectors, no adversarial edits."""
    sizes = memory_sizes(max_cells=12, max_cell_size=6)
    cases = memory_cases(memfn.dnc, sizes, (torch.float64,), max_steps=max_steps, adversaries=("none",), extremes=())
    return cases.map(lambda case: (case.memory, case.state, case.xi))


def _write_next_cell(mem, state, vector):
    """Write ``vector`` into the next free cell by allocation, erasing fully."""
    xi = make_xi(
        R,
        W,
        write_vector=vector,
        erase_vector=ON,
        write_gate=ON,
        allocation_gate=ON,
        free_gates=OFF,
        read_modes=read_mode_logits(R, CONTENT),
    )
    return mem.step(state, xi)


def _three_writes():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    state = mem.init(torch.float64)
    vectors = torch.eye(W, dtype=torch.float64)[:3] * 5.0
    cells = []
    for v in vectors:
        _, state = _write_next_cell(mem, state, v)
        cells.append(int(state.write_weights[0].argmax()))
    return mem, state, vectors, cells


def test_writing_cells_in_turn_links_them():
    _, state, vectors, (a, b, c) = _three_writes()
    assert len({a, b, c}) == 3, "allocation must pick a fresh cell each time"
    link = state.link_matrix[0]
    for cell, v in zip((a, b, c), vectors):
        torch.testing.assert_close(state.memory[cell], v, atol=1e-4, rtol=0)
    assert link[b, a] > 0.99 and link[c, b] > 0.99
    assert link[a, b] < 0.01 and link[b, c] < 0.01 and link[c, a] < 0.01
    torch.testing.assert_close(state.precedence[0, c], torch.tensor(1.0, dtype=torch.float64), atol=1e-4, rtol=0)


def test_first_writes_go_to_cells_in_allocation_order():
    # Free memory: all usages tie, and the stable sort allocates cell 0 first.
    *_, cells = _three_writes()
    assert cells[0] == 0


def test_forward_and_backward_reads_follow_the_links():
    mem, state, vectors, _ = _three_writes()
    no_write = dict(write_gate=OFF, free_gates=OFF)
    # Find cell 0 by content, then follow the forward links twice, then go back once.
    xi = make_xi(R, W, read_keys=vectors[0], read_strengths=ON, read_modes=read_mode_logits(R, CONTENT), **no_write)
    reads, state = mem.step(state, xi)
    torch.testing.assert_close(reads[0], vectors[0], atol=1e-3, rtol=0)
    for expected in (vectors[1], vectors[2]):
        reads, state = mem.step(state, make_xi(R, W, read_modes=read_mode_logits(R, FORWARD), **no_write))
        torch.testing.assert_close(reads[0], expected, atol=1e-3, rtol=0)
    reads, state = mem.step(state, make_xi(R, W, read_modes=read_mode_logits(R, BACKWARD), **no_write))
    torch.testing.assert_close(reads[0], vectors[1], atol=1e-3, rtol=0)


def test_zero_memory_gives_finite_values_and_gradients():
    mem = memfn.dnc(nr_cells=8, cell_size=5, read_heads=2)
    state = optree.tree_map(lambda t: t.requires_grad_(), mem.init(torch.float64))
    xi = torch.zeros(mem.interface_size, dtype=torch.float64, requires_grad=True)
    reads, new = mem.step(state, xi)
    loss = reads.sum() + sum(t.sum() for t in new)
    grads = torch.autograd.grad(loss, [xi, *state], allow_unused=True)
    assert torch.isfinite(reads).all()
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0  # gradients do reach xi


def test_gradients_flow_to_xi_and_to_the_state():
    mem, state, _, _ = _three_writes()
    state = optree.tree_map(lambda t: t.clone().requires_grad_(), state)
    xi = torch.randn(mem.interface_size, dtype=torch.float64, requires_grad=True)
    reads, _ = mem.step(state, xi)
    g_xi, g_memory, g_link = torch.autograd.grad(reads.sum(), [xi, state.memory, state.link_matrix])
    assert g_xi.abs().sum() > 0 and g_memory.abs().sum() > 0 and g_link.abs().sum() > 0


def test_gradcheck_allocation():
    u = torch.tensor([0.3, 0.9, 0.05, 0.6, 0.45], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A.allocation_weights, (u,))


def test_gradcheck_linkage():
    g = torch.Generator().manual_seed(1)
    link = torch.rand(1, 5, 5, generator=g, dtype=torch.float64) * 0.2
    p = torch.softmax(torch.randn(1, 5, generator=g, dtype=torch.float64), -1) * 0.9
    w = torch.softmax(torch.randn(1, 5, generator=g, dtype=torch.float64), -1) * 0.8
    inputs = tuple(t.requires_grad_() for t in (link, p, w))
    assert torch.autograd.gradcheck(A.link_matrix, inputs)
    assert torch.autograd.gradcheck(A.precedence, inputs[1:])


def test_fused_directional_reads_equal_the_separate_ones_with_gradients():
    g = torch.Generator().manual_seed(2)
    link = (torch.rand(2, 6, 6, generator=g, dtype=torch.float64) / 6).requires_grad_()
    w = torch.softmax(torch.randn(2, 3, 6, generator=g, dtype=torch.float64), -1).requires_grad_()
    f, b = A.forward_backward_read_weights(link, w)
    torch.testing.assert_close(f, A.directional_read_weights(link, w, forward=True))
    torch.testing.assert_close(b, A.directional_read_weights(link, w, forward=False))
    assert torch.autograd.gradcheck(A.forward_backward_read_weights, (link, w))


@given(dense_cases(max_steps=4))
def test_gradcheck_whole_step(case):
    mem, state, xi = case
    # Allocation sorts this step's usage u_t (the new state's, computed from the previous usage,
    # write weights and free gates); a finite-difference nudge across a near tie is not a derivative.
    for u in (state.usage_vector, mem.step(state, xi)[1].usage_vector):
        if (u.unsqueeze(0) - u.unsqueeze(1)).abs().add(torch.eye(len(u), dtype=u.dtype)).min() < 1e-4:
            return

    # Previous write weights enter usage only as a stop-gradient (by design), so they are held
    # fixed here; every other leaf and xi are checked.
    def f(xi, memory, link, prec, read_w, usage_v):
        s = state._replace(memory=memory, link_matrix=link, precedence=prec, read_weights=read_w, usage_vector=usage_v)
        reads, new = mem.step(s, xi)
        return (reads, *new)

    leaves = (xi, state.memory, state.link_matrix, state.precedence, state.read_weights, state.usage_vector)
    assert torch.autograd.gradcheck(f, tuple(t.detach().clone().requires_grad_() for t in leaves))


@given(dense_cases())
def test_step_leaves_its_inputs_untouched(case):
    mem, state, xi = case
    before, xi_before = copy.deepcopy(state), xi.clone()
    mem.step(state, xi)
    for a, b in zip(state, before):
        assert torch.equal(a, b)
    assert torch.equal(xi, xi_before)


def test_state_fields_are_dnc_keys_in_dnc_order():
    """The pure state is a plain NamedTuple; its fields are the keys of pytorch-dnc's hidden dict."""
    state = memfn.dnc(nr_cells=4, cell_size=3, read_heads=2).init()
    keys = ("memory", "link_matrix", "precedence", "read_weights", "write_weights", "usage_vector")
    assert state._fields == keys
    as_dict = memfn.compat.memory_dict(state)
    assert type(as_dict) is dict and tuple(as_dict) == keys and as_dict["memory"] is state.memory


@pytest.mark.slow  # 10^4 steps
def test_long_sequence_stays_finite():
    mem = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2)
    g = torch.Generator().manual_seed(0)
    state = mem.init()
    xs = 5 * torch.randn(10_000, mem.interface_size, generator=g)
    for xi in xs:
        reads, state = mem.step(state, xi)
    assert torch.isfinite(reads).all() and all(torch.isfinite(t).all() for t in state)


@pytest.mark.parametrize("name", ["nr_cells", "cell_size", "read_heads"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", True, None])
def test_bad_sizes_raise_value_error_naming_the_argument(name, bad):
    sizes = dict(nr_cells=4, cell_size=3, read_heads=2)
    sizes[name] = bad
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got {bad!r}"):
        memfn.dnc(**sizes)


def test_bad_xi_raises_value_error():
    mem = memfn.dnc(nr_cells=4, cell_size=3, read_heads=2)
    state = mem.init()
    with pytest.raises(ValueError, match=rf"interface_size={mem.interface_size}.*shape \(5,\)"):
        mem.step(state, torch.zeros(5))
    with pytest.raises(ValueError, match="floating dtype.*int64"):
        mem.step(state, torch.zeros(mem.interface_size, dtype=torch.int64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        mem.step(state, [0.0] * mem.interface_size)


def test_backward_keeps_only_the_link_matrices_themselves():
    # Per step, the only N x N tensors saved for backward are the previous and the new link matrix
    # (each shared with its neighbouring step), not the temporaries of the link update.
    n = 24
    mem = memfn.dnc(nr_cells=n, cell_size=4, read_heads=2)
    _, state = mem.step(mem.init(), torch.randn(mem.interface_size))
    state = optree.tree_map(lambda t: t.detach().requires_grad_(), state)
    xi = torch.randn(mem.interface_size, requires_grad=True)
    saved = {}

    def pack(t):
        if t.numel() >= n * n:
            saved[t.data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, new = mem.step(state, xi)
    assert set(saved) == {state.link_matrix.data_ptr(), new.link_matrix.data_ptr()}


def test_custom_operators_pass_opcheck():
    # Schema, fake (meta) kernels, autograd registration and the vmap rule agree with the kernels.
    g = torch.Generator().manual_seed(3)
    link = (torch.rand(2, 5, 5, generator=g, dtype=torch.float64) / 5).requires_grad_()
    p = torch.softmax(torch.randn(2, 5, generator=g, dtype=torch.float64), -1).requires_grad_()
    w = (0.5 * torch.softmax(torch.randn(2, 5, generator=g, dtype=torch.float64), -1)).requires_grad_()
    r = torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1).requires_grad_()
    torch.library.opcheck(torch.ops.memfn.link_matrix, (link, p, w))
    torch.library.opcheck(torch.ops.memfn.forward_backward_read_weights, (link, r))
