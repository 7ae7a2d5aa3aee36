"""The cell's wiring and the runner: read feedback, clipping, bypass, lengths, pluggable memories."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import memfn

I, H, N, W, R = 3, 8, 6, 4, 2


def _cell(**kwargs):
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    ctrl = memfn.lstm(I + mem.read_size, H, num_layers=2)
    return memfn.memory_cell(ctrl, mem, input_size=I, output_size=I, **kwargs)


def test_read_vectors_of_the_previous_step_feed_the_controller():
    cell = _cell()
    params = cell.init_params(dtype=torch.float64)
    state = cell.init_state(torch.float64)
    x = torch.randn(I, dtype=torch.float64)
    _, s1 = cell.step(params, state, x)
    assert s1.read_vectors.abs().sum() > 0
    # Same controller and memory state, different fed-back reads: a different output.
    y_a, _ = cell.step(params, s1, x)
    y_b, _ = cell.step(params, s1._replace(read_vectors=torch.zeros_like(s1.read_vectors)), x)
    assert not torch.allclose(y_a, y_b)
    # And the gradient of the output reaches the previous reads.
    reads = s1.read_vectors.clone().requires_grad_()
    y, _ = cell.step(params, s1._replace(read_vectors=reads), x)
    (g,) = torch.autograd.grad(y.sum(), reads)
    assert g.abs().sum() > 0


def test_controller_output_is_clipped():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    ctrl = memfn.lstm(I + mem.read_size, H)
    loud = ctrl._replace(step=lambda p, s, x, training=False: (torch.full((H,), 100.0, dtype=x.dtype), s))
    seen = {}

    def spy_step(state, xi):
        seen["xi"] = xi
        return mem.step(state, xi)

    cell = memfn.memory_cell(loud, mem._replace(step=spy_step), I, I, clip=0.5)
    params = cell.init_params(dtype=torch.float64)
    cell.step(params, cell.init_state(torch.float64), torch.randn(I, dtype=torch.float64))
    expected = params["interfaces.0.weight"] @ torch.full((H,), 0.5, dtype=torch.float64) + params["interfaces.0.bias"]
    torch.testing.assert_close(seen["xi"], expected)


def test_bypassing_memory_keeps_memory_state_and_zero_reads():
    cell = _cell()
    params, state = cell.init_params(), cell.init_state()
    _, state = cell.step(params, state, torch.randn(I))
    _, bypassed = cell.step(params, state, torch.randn(I), pass_through_memory=False)
    assert all(torch.equal(a, b) for a, b in zip(bypassed.memory, state.memory))
    assert torch.equal(bypassed.read_vectors, torch.zeros(R * W))


def test_unprojected_output_is_controller_output_and_reads():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    cell = memfn.memory_cell(memfn.gru(I + mem.read_size, H), mem, I)
    assert cell.output_size == H + R * W
    y, state = cell.step(cell.init_params(), cell.init_state(), torch.randn(I))
    assert torch.equal(y[H:], state.read_vectors)


def test_vmapped_and_broadcast_runs_agree():
    cell = _cell()
    params = cell.init_params(dtype=torch.float64)
    state = memfn.batch_state(cell.init_state(torch.float64), 4)
    xs = torch.randn(6, 4, I, dtype=torch.float64)
    ys_v, s_v = memfn.run(memfn.batched_step(cell), params, state, xs)
    ys_b, s_b = memfn.run(memfn.batched_step(cell, use_vmap=False), params, state, xs)
    torch.testing.assert_close(ys_v, ys_b)
    for a, b in zip(s_v.memory, s_b.memory):
        torch.testing.assert_close(a, b)


def test_runner_freezes_finished_sequences():
    cell = _cell()
    params = cell.init_params(dtype=torch.float64)
    state = memfn.batch_state(cell.init_state(torch.float64), 2)
    xs = torch.randn(5, 2, I, dtype=torch.float64)
    step = memfn.batched_step(cell)
    ys, final = memfn.run(step, params, state, xs, lengths=torch.tensor([5, 2]))
    ys_short, short = memfn.run(step, params, memfn.batch_state(cell.init_state(torch.float64), 1), xs[:2, 1:])
    torch.testing.assert_close(ys[:2, 1], ys_short[:, 0])
    assert torch.equal(ys[2:, 1], torch.zeros(3, I, dtype=torch.float64))
    torch.testing.assert_close(final.memory.memory[1], short.memory.memory[0])
    torch.testing.assert_close(final.controller.h[1], short.controller.h[0])


class CounterState(NamedTuple):
    count: torch.Tensor  # [1]


def test_any_memory_pair_plugs_in():
    # A toy memory that reads back how many steps it has seen: the cell must not care.
    def init(dtype=None, device=None):
        return CounterState(torch.zeros(1, dtype=dtype, device=device))

    def step(state, xi):
        count = state.count + 1
        return count.expand(1, 2) + 0 * xi[:2], CounterState(count)

    counter = memfn.Memory(init=init, step=step, interface_size=2, read_size=2)
    cell = memfn.memory_cell(memfn.rnn(I + 2, H), counter, I, I)
    params, state = cell.init_params(), memfn.batch_state(cell.init_state(), 3)
    _, final = memfn.run(memfn.batched_step(cell), params, state, torch.randn(4, 3, I))
    assert torch.equal(final.memory.count, torch.full((3, 1), 4.0))


def test_mismatched_controller_raises():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    with pytest.raises(
        ValueError, match=r"controller.input_size must be input_size \+ memory.read_size = 3 \+ 8 = 11, got 3"
    ):
        memfn.memory_cell(memfn.lstm(I, H), mem, I)
    with pytest.raises(ValueError, match="clip must be a number >= 0"):
        memfn.memory_cell(memfn.lstm(I + 8, H), mem, I, clip=-1)


@pytest.mark.parametrize("shared", [True, False])
def test_stacked_layers_chain_and_feed_back_the_top_reads(shared):
    mems = [memfn.dnc(nr_cells=N, cell_size=W, read_heads=R) for _ in range(2)]
    ctrls = [memfn.lstm(I + R * W, H), memfn.gru(H + R * W, H)]
    cell = memfn.memory_cell(ctrls, mems[0] if shared else mems, I, I)
    params = cell.init_params(dtype=torch.float64)
    state = cell.init_state(torch.float64)
    assert isinstance(state.controller, tuple) and len(state.controller) == 2
    assert isinstance(state.memory, memfn.DNCState) if shared else len(state.memory) == 2
    trace: list = []
    _, s1 = cell.step(params, state, torch.randn(I, dtype=torch.float64), trace=trace)
    assert len(trace) == 2  # one memory state per layer
    if shared:  # the second layer stepped the memory the first layer had written
        assert trace[1] is s1.memory and not torch.equal(trace[0].memory, trace[1].memory)
    # The top layer's reads are the ones carried to the next step.
    assert torch.equal(s1.read_vectors, (trace[1].read_weights @ trace[1].memory).flatten())


def test_stacked_layer_sizes_are_checked():
    mem = memfn.dnc(nr_cells=N, cell_size=W, read_heads=R)
    with pytest.raises(ValueError, match=r"controller\[1\].input_size must be the layer below's hidden \+ reads"):
        memfn.memory_cell([memfn.lstm(I + R * W, H), memfn.lstm(H, H)], mem, I)
    with pytest.raises(ValueError, match="one per layer"):
        memfn.memory_cell([memfn.lstm(I + R * W, H)] * 2, [mem] * 3, I)


def test_checkpointed_run_equals_plain_run_in_values_and_gradients():
    cell = _cell()
    params = {k: v.requires_grad_() for k, v in cell.init_params(dtype=torch.float64).items()}
    state = memfn.batch_state(cell.init_state(torch.float64), 3)
    xs = torch.randn(7, 3, I, dtype=torch.float64)
    step = memfn.batched_step(cell, use_vmap=False)
    results = []
    for every in (None, 3):
        ys, final = memfn.run(step, params, state, xs, lengths=torch.tensor([7, 4, 6]), checkpoint_every=every)
        grads = torch.autograd.grad(ys.square().sum() + final.memory.memory.sum(), list(params.values()))
        results.append((ys, grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)
