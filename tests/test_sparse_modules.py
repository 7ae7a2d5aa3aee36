"""memfn.SAM and memfn.SDNC: drop-ins for pytorch-dnc's sparse shells (``dnc`` 1.1.0).

Constructor, forward contract, hidden state round trips, debug views, compile and errors. The
tests against the real package are skipped when ``dnc`` is not importable.
"""

from __future__ import annotations

import inspect

import numpy as np
import optree
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import memfn
import memfn.compat
from memfn import SAM, SDNC

I, H, N, W, R, K, L = 6, 12, 24, 4, 2, 3, 2
B, T = 3, 7
# pytorch-dnc's debug keys, in its order (SDNC: then memfn's link columns).
SAM_KEYS = ("memory", "visible_memory", "read_weights", "write_weights", "read_vectors", "least_used_mem", "usage",
            "read_positions")  # fmt: skip
SDNC_KEYS = ("memory", "visible_memory", "link_matrix", "rev_link_matrix", "precedence", "read_weights",
             "write_weights", "read_vectors", "least_used_mem", "usage", "read_positions", "link_positions",
             "rev_link_positions")  # fmt: skip


def small(cls, **kwargs):
    sizes = {"nr_cells": N, "cell_size": W, "read_heads": R, "sparse_reads": K}
    if cls is SDNC:
        sizes["temporal_reads"] = L
    return cls(I, H, **{**sizes, **kwargs})


def x_of(batch=B, time=T):
    return torch.randn(batch, time, I)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    la, lb = optree.tree_leaves(a), optree.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)


shells = pytest.mark.parametrize("cls", [SAM, SDNC], ids=["SAM", "SDNC"])


@pytest.fixture
def fresh_device_warnings(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the CPU fallback warning only happens without CUDA")
    monkeypatch.setattr(memfn.compat, "_warned_devices", set())


ISSUE_EXAMPLE = """
from memfn import SDNC, SAM
rnn = SDNC(input_size=64, hidden_size=128, rnn_type='lstm', num_layers=4, nr_cells=100,
           cell_size=32, read_heads=4, sparse_reads=4, temporal_reads=4, batch_first=True, gpu_id=0)
rnn = SAM(input_size=64, hidden_size=128, rnn_type='lstm', num_layers=4, nr_cells=100,
          cell_size=32, read_heads=4, sparse_reads=4, batch_first=True, gpu_id=0)
"""


def test_issue_example_runs_verbatim_on_cpu(fresh_device_warnings):
    namespace: dict = {}
    with pytest.warns(UserWarning, match="CUDA is not available; running on CPU"):
        exec(ISSUE_EXAMPLE, namespace)
    rnn = namespace["rnn"]
    out, (chx, mhx, rv) = rnn(torch.randn(2, 5, 64))
    assert out.shape == (2, 5, 64) and len(chx) == 4 and rv.shape == (2, 4 * 32)
    assert mhx["memory"].shape == (2, 100, 32) and mhx["read_positions"].shape == (2, 4, 4)


@shells
def test_signature_equals_the_dnc_package(cls):
    dnc = pytest.importorskip("dnc")
    ref = list(inspect.signature(getattr(dnc, cls.__name__)).parameters.values())
    ours = [p for p in inspect.signature(cls).parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in ours] == [p.name for p in ref]
    assert [p.default for p in ours if p.name != "share_memory"] == [p.default for p in ref if p.name != "share_memory"]


@shells
def test_defaults_are_pytorch_dnc_s(cls):
    rnn = cls(4, 8)
    assert (rnn.nr_cells, rnn.read_heads, rnn.sparse_reads) == (5000, 4, 4)
    assert getattr(rnn, "temporal_reads", 4) == 4


@shells
@pytest.mark.parametrize("share_memory, num_layers", [(True, 1), (True, 2), (False, 2)])
def test_output_and_hidden_shapes_as_pytorch_dnc(cls, share_memory, num_layers):
    rnn = small(cls, share_memory=share_memory, num_layers=num_layers)
    out, (chx, mhx, rv) = rnn(x_of())
    assert out.shape == (B, T, I) and rv.shape == (B, R * W) and len(chx) == num_layers
    mems = [mhx] if share_memory else mhx
    assert len(mems) == (1 if share_memory else num_layers)
    for m in mems:
        assert m["memory"].shape == (B, N, W)
        slots = K + 2 * L if cls is SDNC else K
        assert m["read_positions"].shape == m["read_weights"].shape == (B, R, slots)
        if cls is SDNC:
            assert m["link_matrix"].shape == m["rev_link_matrix"].shape == (B, N, L)


@shells
def test_time_first_and_packed_sequences(cls):
    rnn = small(cls)
    x = x_of()
    out_bf, _ = rnn(x)
    tf = small(cls, batch_first=False)
    tf.load_state_dict(rnn.state_dict())
    out_tf, _ = tf(x.transpose(0, 1).contiguous())
    torch.testing.assert_close(out_tf.transpose(0, 1), out_bf)
    lengths = torch.tensor([T, 3, 5])
    packed, _ = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed, batch_first=True)
    torch.testing.assert_close(padded[1, :3], rnn(x[1:2, :3])[0][0])


@shells
def test_carrying_the_hidden_state_continues_exactly(cls):
    rnn = small(cls)
    x = x_of(time=8)
    whole, hidden_whole = rnn(x)
    first, hidden = rnn(x[:, :5])
    second, hidden_end = rnn(x[:, 5:], hidden)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    assert_trees_close(hidden_end, hidden_whole)


def test_sdnc_forward_and_backward_links_stay_distinct_after_a_round_trip():
    # pytorch-dnc overwrote the backward links with the forward ones when the state was passed in.
    rnn = small(SDNC)
    _, (chx, mhx, rv) = rnn(x_of(time=6))
    assert not torch.equal(mhx["link_matrix"], mhx["rev_link_matrix"])
    state = rnn.initial_state((chx, mhx, rv), B, False, x_of())
    for key in mhx.keys():
        assert torch.equal(getattr(state.memory, key), mhx[key]), key
    as_dict = {k: mhx[k] for k in mhx.keys()}
    x = x_of(time=2)
    out_a, (_, after_a, _) = rnn(x, memfn.clone((chx, mhx, rv)))  # the fast path consumes what it is given
    out_b, (_, after_b, _) = rnn(x, (chx, as_dict, rv))
    torch.testing.assert_close(out_a, out_b)
    assert not torch.equal(after_a["link_matrix"], after_a["rev_link_matrix"])


@shells
def test_reset_experience_and_pass_through_memory(cls):
    rnn = small(cls)
    _, hidden = rnn(x_of())
    x = x_of()
    reset, _ = rnn(x, (hidden[0], hidden[1], None), reset_experience=True)
    fresh, _ = rnn(x, (hidden[0], None, None))
    torch.testing.assert_close(reset, fresh)
    bypass, (_, mhx, rv) = rnn(x, memfn.clone(hidden), pass_through_memory=False)
    assert_trees_close(mhx, hidden[1])
    assert rv is None  # dnc 1.1.0's read vectors without the memory (2.0: zeros)


@shells
def test_gradients_reach_every_parameter_and_hidden_state_detaches(cls):
    rnn = small(cls, independent_linears=True)
    out, hidden = rnn(x_of())
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rnn.parameters())
    out2, _ = rnn(x_of(), memfn.detach(hidden))
    out2.sum().backward()


@shells
def test_debug_views_of_batch_element_0(cls):
    rnn = small(cls, debug=True, num_layers=2)
    out, hidden, debug = rnn(x_of())
    keys = SDNC_KEYS if cls is SDNC else SAM_KEYS
    assert tuple(debug) == keys
    slots = K + 2 * L if cls is SDNC else K
    widths = {"memory": N * W, "visible_memory": R * slots * W, "read_positions": R * slots}
    widths |= {"read_weights": R * N, "write_weights": N, "usage": N}
    widths |= {"link_matrix": N * L, "rev_link_matrix": N * L, "precedence": N}
    widths |= {"read_vectors": R * W, "least_used_mem": 1, "link_positions": N * L, "rev_link_positions": N * L}
    assert {k: v.shape for k, v in debug.items()} == {k: (2 * T, widths[k]) for k in keys}
    final = hidden[1]
    assert (debug["memory"][-1] == final["memory"][0].detach().reshape(-1).numpy()).all()
    # The read vectors are what the last layer read (the ones handed on), the least-used cell one
    # that no read slot of this step holds unless every cell was touched.
    np.testing.assert_allclose(debug["read_vectors"][-1], hidden[2][0].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ((0 <= debug["least_used_mem"]) & (debug["least_used_mem"] < N)).all()
    # Dense views of the sparse weightings: each head's read weights sum to at most 1.
    assert (debug["read_weights"].reshape(2 * T, R, N).sum(-1) <= 1 + 1e-5).all()
    plain = small(cls, num_layers=2)
    plain.load_state_dict(rnn.state_dict())
    torch.manual_seed(1)
    x = x_of()
    torch.testing.assert_close(rnn(x)[0], plain(x)[0])


@shells
def test_memory_views_step_the_layer_memory(cls):
    rnn = small(cls)
    state = rnn.memories[0].reset(batch_size=B)
    reads, after = rnn.memories[0](torch.randn(B, H), state)
    assert reads.shape == (B, R, W) and after["time"].tolist() == [1] * B
    assert not hasattr(rnn.memories[0], "write")  # pytorch-dnc's dense write/read are DNC-only


@shells
def test_faiss_backend_runs_and_matches_exact_where_no_ties(cls):
    pytest.importorskip("faiss")
    exact = small(cls)
    flat = small(cls, knn="faiss")
    flat.load_state_dict(exact.state_dict())
    x = x_of()
    # Prime with a random memory so nearest cells are unique (a zero memory is all ties).
    _, (chx, mhx, rv) = exact(x)
    mhx = {**mhx, "memory": torch.randn_like(mhx["memory"])}
    out_e, _ = exact(x[:, :1], memfn.clone((chx, mhx, rv)))
    out_f, _ = flat(x[:, :1], (chx, mhx, rv))
    torch.testing.assert_close(out_f, out_e)


# -- the fast path ----------------------------------------------------------------------------------


@shells
@pytest.mark.parametrize("config", [{}, {"num_layers": 2, "share_memory": False}, {"num_layers": 2}])
def test_fast_path_equals_the_pure_step_outputs_and_gradients(cls, config):
    torch.manual_seed(3)
    fast = small(cls, **config).double()
    pure = small(cls, fast=False, **config).double()
    pure.load_state_dict(fast.state_dict())
    assert fast.uses_fast_path() and not pure.uses_fast_path()
    x = x_of(time=9).double()
    out_f, hid_f = fast(x)
    out_p, hid_p = pure(x)
    torch.testing.assert_close(out_f, out_p)
    assert_trees_close(hid_f, hid_p)
    (out_f.square().sum() + hid_f[2].sum()).backward()
    (out_p.square().sum() + hid_p[2].sum()).backward()
    for (name, pf), pp in zip(fast.named_parameters(), pure.parameters()):
        torch.testing.assert_close(pf.grad, pp.grad, msg=name)
    # Continuing from the returned state (which the fast call then consumes) still agrees.
    x2 = x_of(time=4).double()
    torch.testing.assert_close(fast(x2, memfn.detach(hid_f))[0], pure(x2, memfn.detach(hid_p))[0])


@shells
def test_fast_path_gradient_reaches_a_learned_initial_memory(cls):
    fast = small(cls).double()
    pure = small(cls, fast=False).double()
    pure.load_state_dict(fast.state_dict())
    _, (chx, mhx, rv) = pure(x_of().double())
    start = torch.randn_like(mhx["memory"]).requires_grad_()
    x = x_of().double()
    grads = []
    for rnn in (fast, pure):
        # clone: the fast call consumes the buffers it is given (detach would share them).
        hidden = (memfn.clone(chx), {**memfn.clone(mhx), "memory": start}, rv.detach())
        out, _ = rnn(x, hidden)
        (grad,) = torch.autograd.grad(out.square().sum(), start)
        grads.append(grad)
    torch.testing.assert_close(*grads)
    assert start.shape == mhx["memory"].shape  # a tensor that requires grad is copied, never consumed


@shells
def test_fast_path_backward_through_two_calls_reaches_the_first_call(cls):
    # The second call takes the first call's buffers over; the first call's backward still works
    # (through the controller state and read vectors; the memory itself is cut, as after detach).
    rnn = small(cls)
    out1, hidden = rnn(x_of())
    out2, _ = rnn(x_of(), hidden)
    (out1.sum() + out2.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rnn.parameters())
    x = x_of().requires_grad_()
    out1, hidden = rnn(x)
    out2, _ = rnn(x_of(), hidden)
    (grad,) = torch.autograd.grad(out2.sum(), x)  # reaches x through the carried controller state
    assert grad.abs().sum() > 0


def test_fast_path_backward_twice_with_retain_graph_gives_the_same_gradients():
    rnn = small(SAM)
    out, _ = rnn(x_of())
    first = torch.autograd.grad(out.square().sum(), list(rnn.parameters()), retain_graph=True)
    second = torch.autograd.grad(out.square().sum(), list(rnn.parameters()))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


@shells
def test_a_consumed_hidden_state_cannot_be_used_again_by_mistake(cls):
    rnn = small(cls)
    _, hidden = rnn(x_of())
    kept = memfn.clone(hidden)
    rnn(x_of(), hidden)
    with pytest.raises(ValueError, match=r"consumed by an earlier forward call.*memfn.clone\(hidden\)"):
        rnn(x_of(), hidden)
    rnn(x_of(), kept)  # the clone is independent


def test_the_maintained_faiss_index_is_reused_across_calls_and_searches_sublinearly():
    pytest.importorskip("faiss")
    rnn = small(SAM, nr_cells=400, knn="faiss", index="ivf")
    _, hidden = rnn(x_of(time=20))
    indexes = rnn._indexes[0]
    assert len(indexes) == B and all(i.count > 0 for i in indexes)
    _, hidden = rnn(x_of(time=5), hidden)
    assert rnn._indexes[0] is indexes  # continued, not rebuilt
    _, other = rnn(x_of(time=5))  # a fresh memory gets fresh indexes
    assert rnn._indexes[0] is not indexes


def test_a_memory_that_cannot_fit_fails_before_allocating():
    with pytest.raises(MemoryError, match=r"needs [\d.]+ GiB but only [\d.]+ GiB"):
        SAM(I, H, nr_cells=10**9, cell_size=64)(x_of(time=1))
    with pytest.raises(MemoryError, match="N x N link matrix"):
        memfn.dnc(nr_cells=10**6, cell_size=8, read_heads=1).init()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fast": "yes"}, "fast must be True or False"),
        ({"sparse_reads": 0}, "sparse_reads must be an integer >= 1"),
        ({"sparse_reads": N + 1}, rf"sparse_reads must be in \[1, nr_cells={N}\]"),
        ({"knn": "annoy"}, "knn must be one of"),
        ({"knn": "faiss", "index": "ivf", "num_lists": N + 1}, "num_lists must be in"),
    ],
)
def test_bad_sam_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(SAM, **kwargs)


def test_bad_sdnc_temporal_reads():
    with pytest.raises(ValueError, match="temporal_reads must be an integer >= 1"):
        small(SDNC, temporal_reads=0)


@shells
def test_hidden_state_with_wrong_dtype_positions_is_cast_and_wrong_shape_rejected(cls):
    rnn = small(cls)
    _, (chx, mhx, rv) = rnn(x_of())
    bad = {**mhx, "read_positions": mhx["read_positions"][:, :1]}
    with pytest.raises(ValueError, match=r"memory\['read_positions'\] has shape"):
        rnn(x_of(), (chx, bad, rv))


needs_stance = pytest.mark.skipif(
    not hasattr(torch.compiler, "set_stance"), reason="torch.compiler.set_stance needs torch >= 2.6"
)


@pytest.mark.slow  # a cold compile of a sparse shell's step takes 50-100 s here; CI runs it under -m slow
@needs_stance
@shells
def test_compiled_equals_eager_and_compiles_once(cls):
    eager = small(cls)
    compiled = small(cls, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = x_of()
    out_c, hid_c = compiled(x)
    out_e, hid_e = eager(x)
    torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
    out_c.sum().backward()
    out_e.sum().backward()
    for (name, pc), pe in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, atol=1e-4, rtol=1e-4, msg=name)
    x2 = x_of(time=T + 3)
    with torch.compiler.set_stance("fail_on_recompile"):  # another length, a carried state: same graph
        out_c2, _ = compiled(x2, memfn.detach(hid_c))
    out_e2, _ = eager(x2, memfn.detach(hid_e))
    torch.testing.assert_close(out_c2, out_e2, atol=1e-5, rtol=1e-5)
