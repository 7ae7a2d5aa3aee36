"""Issue 18: masked addressing, de-allocation, link sharpness and several write heads (Csordas &
Schmidhuber 2019; deepmind/dnc's ``num_writes``): defaults unchanged, each option's reduction to the
plain DNC, invariants, float64 gradients, the shells and the task flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import memfn
from memfn import _dnc
from memfn import addressing as A
from memfn.interface import split_dnc_interface
from memfn.tasks.train import UserError, build_model, build_parser
from tests.data.make_dnc_reference import reference
from tests.data.stored import assert_stored_numbers

N, W, R = 7, 4, 2
F64 = torch.float64
ALL: dict[str, Any] = {"masking": True, "deallocation": True, "link_sharpness": True}


def _dist(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, dtype=F64), -1) * torch.rand(*shape[:-1], 1, dtype=F64)


def _run(mem: memfn.Memory, xis: torch.Tensor) -> tuple[list[torch.Tensor], _dnc.DNCState]:
    state, reads = mem.init(F64), []
    for xi in xis:
        r, state = mem.step(state, xi)
        reads.append(r)
    return reads, state


def _assert_runs_equal(a: tuple[Any, ...], b: tuple[Any, ...], atol: float = 0.0) -> None:
    for x, y in zip(a[0], b[0]):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


# -- defaults: today's numbers -------------------------------------------------------------------


def test_defaults_give_the_stored_numbers_of_the_plain_dnc() -> None:
    assert_stored_numbers("dnc_reference.pt", reference())


def test_default_layout_and_state_are_unchanged() -> None:
    mem = memfn.dnc(N, W, R)
    assert mem.interface_size == R * W + 3 * W + 5 * R + 3
    assert [name for name, _ in mem.interface_fields][-1] == "read_modes"
    io = split_dnc_interface(torch.zeros(mem.interface_size), R, W)
    assert io.read_masks is None and io.forward_sharpness is None and io.erase_vector.shape == (W,)


# -- masking ---------------------------------------------------------------------------------------


def test_mask_is_in_unit_interval_and_an_all_ones_mask_is_plain_addressing() -> None:
    mem = memfn.dnc(N, W, R, masking=True)
    io = split_dnc_interface(torch.randn(mem.interface_size, dtype=F64) * 10, R, W, masking=True)
    for mask in (io.read_masks, io.write_masks):
        assert mask is not None and ((mask >= 0) & (mask <= 1)).all()
    memory, keys, beta = torch.randn(N, W, dtype=F64), torch.randn(R, W, dtype=F64), 1 + torch.rand(R, dtype=F64)
    masked = A.masked_content_weights(memory, keys, beta, torch.ones(R, W, dtype=F64))
    torch.testing.assert_close(masked, A.content_weights(memory, keys, beta), atol=1e-14, rtol=0)


def test_mask_ignores_the_masked_out_columns() -> None:
    memory, keys, beta = torch.randn(N, W, dtype=F64), torch.randn(R, W, dtype=F64), 1 + torch.rand(R, dtype=F64)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64).expand(R, W)
    changed = memory.clone()
    changed[:, 2:] = torch.randn(N, 2, dtype=F64)
    torch.testing.assert_close(
        A.masked_content_weights(memory, keys, beta, mask), A.masked_content_weights(changed, keys, beta, mask)
    )


def test_a_saturated_all_ones_mask_gives_the_plain_dnc() -> None:
    plain, masked = memfn.dnc(N, W, R), memfn.dnc(N, W, R, masking=True)
    xis = torch.randn(6, plain.interface_size, dtype=F64)
    ones = torch.full((6, (R + 1) * W), 100.0, dtype=F64)  # sigmoid(100) == 1 in float64
    _assert_runs_equal(_run(plain, xis), _run(masked, torch.cat([xis, ones], -1)), atol=1e-13)


# -- de-allocation ---------------------------------------------------------------------------------


def _free_gates_off(mem: memfn.Memory, xis: torch.Tensor) -> torch.Tensor:
    start = sum(size for name, size in mem.interface_fields[: [n for n, _ in mem.interface_fields].index("free_gates")])
    xis = xis.clone()
    xis[:, start : start + R] = -1000.0  # sigmoid == 0 exactly
    return xis


def test_deallocation_with_zero_free_gates_is_the_plain_dnc() -> None:
    plain, dealloc = memfn.dnc(N, W, R), memfn.dnc(N, W, R, deallocation=True)
    xis = _free_gates_off(plain, torch.randn(6, plain.interface_size, dtype=F64))
    _assert_runs_equal(_run(plain, xis), _run(dealloc, xis))


def test_deallocation_erases_freed_cells() -> None:
    memory = torch.randn(N, W, dtype=F64)
    psi = A.retention(torch.ones(1, dtype=F64), torch.eye(N, dtype=F64)[2:3])
    out = A.deallocated_memory(memory, psi)
    assert (out[2] == 0).all() and torch.equal(out[3:], memory[3:])
    # and it changes a run where the free gates are on
    plain, dealloc = memfn.dnc(N, W, R), memfn.dnc(N, W, R, deallocation=True)
    xis = torch.randn(6, plain.interface_size, dtype=F64)
    assert not torch.allclose(_run(plain, xis)[1].memory, _run(dealloc, xis)[1].memory)


# -- link sharpness --------------------------------------------------------------------------------


def test_sharpness_one_is_plain_links_and_keeps_the_mass() -> None:
    d = _dist(R, N)
    d[0, 3] = 0.0
    torch.testing.assert_close(A.sharpened_weights(d, torch.ones(R, dtype=F64)), d, atol=1e-15, rtol=0)
    sharp = A.sharpened_weights(d, torch.full((R,), 3.0, dtype=F64))
    torch.testing.assert_close(sharp.sum(-1), d.sum(-1))
    assert sharp[0, 3] == 0 and (sharp.amax(-1) >= d.amax(-1) - 1e-15).all()  # sharper
    zero = A.sharpened_weights(torch.zeros(R, N, dtype=F64), torch.full((R,), 2.0, dtype=F64))
    assert torch.equal(zero, torch.zeros(R, N, dtype=F64))  # nothing to follow stays nothing


def test_sharpness_gradient_is_finite_at_zero_weights() -> None:
    d = torch.zeros(R, N, dtype=F64)
    d[:, 1] = 0.5
    d.requires_grad_()
    s = torch.full((R,), 2.0, dtype=F64, requires_grad=True)
    d_grad, s_grad = torch.autograd.grad(A.sharpened_weights(d, s).pow(2).sum(), (d, s))
    assert torch.isfinite(d_grad).all() and torch.isfinite(s_grad).all()


def test_a_saturated_unit_sharpness_gives_the_plain_dnc() -> None:
    plain, sharp = memfn.dnc(N, W, R), memfn.dnc(N, W, R, link_sharpness=True)
    xis = torch.randn(6, plain.interface_size, dtype=F64)
    ones = torch.full((6, 2 * R), -1000.0, dtype=F64)  # oneplus(-1000) == 1
    _assert_runs_equal(_run(plain, xis), _run(sharp, torch.cat([xis, ones], -1)), atol=1e-13)


# -- several write heads ---------------------------------------------------------------------------


def test_the_several_heads_path_with_one_head_is_the_single_head_dnc() -> None:
    mem = memfn.dnc(N, W, R)
    reads, state = _run(mem, torch.randn(4, mem.interface_size, dtype=F64))
    io = split_dnc_interface(torch.randn(mem.interface_size, dtype=F64), R, W)
    single = _dnc.write(state, io)
    as_heads = io._replace(erase_vector=io.erase_vector.unsqueeze(0), write_vector=io.write_vector.unsqueeze(0))
    multi = _dnc._multi_write(state, as_heads, _dnc.DNCOptions(write_heads=1))
    for a, b in zip(single, multi):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
    fwd, bwd = A.multi_forward_backward_read_weights(single.link_matrix, state.read_weights)
    fwd1, bwd1 = A.forward_backward_read_weights(single.link_matrix[0], state.read_weights)
    torch.testing.assert_close(fwd[:, 0], fwd1, atol=1e-15, rtol=0)
    torch.testing.assert_close(bwd[:, 0], bwd1, atol=1e-15, rtol=0)
    modes = io.read_modes
    torch.testing.assert_close(
        A.multi_read_weights(state.read_weights, fwd, bwd, modes),
        A.read_weights(state.read_weights, fwd1, bwd1, modes),
        atol=1e-15,
        rtol=0,
    )
    u = torch.rand(N, dtype=F64)
    torch.testing.assert_close(
        A.multi_write_allocation_weights(u, torch.rand(1, dtype=F64))[0], A.allocation_weights(u)
    )


@pytest.mark.parametrize("heads", [2, 3])
def test_several_heads_keep_the_usage_allocation_and_link_invariants(heads: int) -> None:
    torch.manual_seed(heads)
    mem = memfn.dnc(N, W, R, write_heads=heads, **ALL)
    state = mem.init(F64)
    for _ in range(12):
        reads, state = mem.step(state, 3 * torch.randn(mem.interface_size, dtype=F64))
        u = state.usage_vector
        assert ((u >= 0) & (u <= 1)).all()
        assert state.write_weights.shape == (heads, N) and (state.write_weights >= 0).all()
        assert (state.write_weights.sum(-1) <= 1 + 1e-12).all()
        assert (state.precedence.sum(-1) <= 1 + 1e-12).all()
        link = state.link_matrix
        assert link.shape == (heads, N, N) and ((link >= 0) & (link <= 1 + 1e-12)).all()
        assert (torch.diagonal(link, dim1=-2, dim2=-1) == 0).all()
        assert (state.read_weights.sum(-1) <= 1 + 1e-12).all()
        alloc = A.multi_write_allocation_weights(u, torch.rand(heads, dtype=F64))
        assert ((alloc >= 0) & (alloc <= 1)).all() and (alloc.sum(-1) <= 1 + 1e-12).all()


def test_heads_that_allocate_together_take_different_cells() -> None:
    alloc = A.multi_write_allocation_weights(torch.zeros(N, dtype=F64), torch.ones(3, dtype=F64))
    assert len(set(alloc.argmax(-1).tolist())) == 3
    mem = memfn.dnc(N, W, R, write_heads=3)
    layout = dict(mem.interface_fields)
    assert layout["read_modes"] == 7 * R and layout["erase_vector"] == 3 * W


# -- float64 gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, make",
    [
        (A.masked_content_weights, lambda: (torch.randn(N, W), torch.randn(R, W), 1 + torch.rand(R), torch.rand(R, W))),
        (A.deallocated_memory, lambda: (torch.randn(N, W), torch.rand(N))),
        (A.sharpened_weights, lambda: (_dist(R, N).float() + 0.01, 1 + torch.rand(R))),
        (A.combined_write_weights, lambda: (_dist(3, N).float(),)),
        (A.multi_write_allocation_weights, lambda: (torch.rand(N), torch.rand(3))),
        (A.multi_updated_memory, lambda: (torch.randn(N, W), _dist(3, N).float(), torch.rand(3, W), torch.randn(3, W))),
        (A.multi_forward_backward_read_weights, lambda: (torch.rand(3, N, N) / N, _dist(R, N).float())),
        (
            A.multi_read_weights,
            lambda: (_dist(R, N).float(), _dist(R, 3, N).float(), _dist(R, 3, N).float(), _dist(R, 7).float()),
        ),
    ],  # fmt: skip
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_gradcheck_float64(fn: Callable[..., Any], make: Callable[[], tuple[torch.Tensor, ...]]) -> None:
    torch.manual_seed(0)
    args = tuple(a.to(F64).requires_grad_() for a in make())
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("options", [ALL, {**ALL, "write_heads": 2}, {"write_heads": 3}], ids=["all", "all-2", "3"])
def test_gradcheck_float64_whole_step(options: dict[str, Any]) -> None:
    torch.manual_seed(1)
    mem = memfn.dnc(5, 3, 2, **options)
    _, state = _run(mem, torch.randn(3, mem.interface_size, dtype=F64))
    xi = torch.randn(mem.interface_size, dtype=F64, requires_grad=True)
    memory = state.memory.clone().requires_grad_()

    def step(xi: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        reads, new = mem.step(state._replace(memory=memory), xi)
        return reads, new.memory, new.read_weights, new.link_matrix

    assert torch.autograd.gradcheck(step, (xi, memory))


# -- shells and task flags -------------------------------------------------------------------------


@pytest.mark.parametrize("independent", [False, True])
def test_shell_with_every_option_runs_forward_backward_and_carries_its_state(independent: bool) -> None:
    rnn = memfn.DNC(input_size=5, hidden_size=8, nr_cells=6, cell_size=4, read_heads=2, write_heads=2,
                    independent_linears=independent, **ALL)  # fmt: skip
    size = memfn.dnc(6, 4, 2, write_heads=2, **ALL).interface_size
    assert rnn.step_params()["interfaces.0.weight"].shape[0] == size
    out, (chx, mhx, rv) = rnn(torch.randn(3, 4, 5))
    assert tuple(mhx["link_matrix"].shape) == (3, 2, 6, 6) and tuple(mhx["write_weights"].shape) == (3, 2, 6)
    out2, _ = rnn(torch.randn(3, 2, 5), memfn.detach((chx, mhx, rv)))
    (out.sum() + out2.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in rnn.parameters() if p.grad is not None)


def test_task_flags_build_the_options() -> None:
    args = build_parser("copy").parse_args(["-masking", "-deallocation", "-sharpness", "-write_heads", "2"])
    args.task, args.output_size = "copy", args.input_size
    model = build_model(args)
    assert isinstance(model, memfn.DNC)
    assert (model.masking, model.deallocation, model.link_sharpness, model.write_heads) == (True, True, True, 2)
    plain = build_parser("copy").parse_args([])
    plain.task, plain.output_size = "copy", plain.input_size
    model = build_model(plain)
    assert isinstance(model, memfn.DNC) and model.write_heads == 1 and not model.masking
    # The sparse memories take the options that apply to them (tests/test_improved_sparse.py).
    sparse = build_parser("copy").parse_args(["-memory_type", "sdnc", "-deallocation"])
    sparse.task, sparse.output_size = "copy", sparse.input_size
    with pytest.raises(UserError, match="dnc only"):
        build_model(sparse)
