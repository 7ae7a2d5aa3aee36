"""memfn.DNC, the nn.Module shell: a drop-in for pytorch-dnc's ``DNC`` (the ``dnc`` 1.1.0 package).

Covers issue 3 except the performance benchmark: constructor, forward contract, hidden state
structure, ``rnn.memories[i]`` methods, debug views, functional / vmapped / compiled paths and the
error messages. The tests that compare against the real package (``pip install --no-deps
dnc==1.1.0``) are skipped when ``dnc`` is not importable.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections import OrderedDict

import numpy as np
import optree
import pytest
import torch
import torch.utils._pytree as pytree
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import memfn
import memfn.compat
from memfn import DNC, DNCState
from memfn._dnc import read as dense_read
from memfn._dnc import write as dense_write
from memfn.interface import DNCInterface, interface_field_sizes, interface_layout

I, H, N, W, R = 6, 12, 5, 4, 2
B, T = 3, 7
KEYS = ("memory", "link_matrix", "precedence", "read_weights", "write_weights", "usage_vector")

# The dnc 1.1.0 constructor, in order (share_memory's default is a sentinel that means True).
DNC_110_SIGNATURE = [
    ("input_size", inspect.Parameter.empty),
    ("hidden_size", inspect.Parameter.empty),
    ("rnn_type", "lstm"),
    ("num_layers", 1),
    ("num_hidden_layers", 2),
    ("bias", True),
    ("batch_first", True),
    ("dropout", 0),
    ("bidirectional", False),
    ("nr_cells", 5),
    ("read_heads", 2),
    ("cell_size", 10),
    ("nonlinearity", "tanh"),
    ("gpu_id", -1),
    ("independent_linears", False),
    ("share_memory", True),
    ("debug", False),
    ("clip", 20),
]


def small(**kwargs) -> DNC:
    return DNC(I, H, **{"nr_cells": N, "cell_size": W, "read_heads": R, **kwargs})


def x_of(batch=B, time=T, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, time, I, dtype=dtype)


def twin(rnn: DNC, **kwargs) -> DNC:
    """A second module with ``rnn``'s constructor arguments changed by ``kwargs`` and its weights."""
    other = small(**kwargs)
    other.load_state_dict(rnn.state_dict())
    return other


def _as_dicts(tree):
    """memfn's state NamedTuples as the dicts the shells return (so leaves line up in one order)."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields") and "memory" in tree._fields:
        return dict(zip(tree._fields, tree))
    if isinstance(tree, dict):
        return {k: _as_dicts(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_as_dicts(v) for v in tree) if not hasattr(tree, "_fields") else tree
    return tree


def leaves(tree) -> list[torch.Tensor]:
    return optree.tree_leaves(_as_dicts(tree))


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)


def memory_shapes(batch, n=N, w=W, r=R) -> dict[str, tuple[int, ...]]:
    return {
        "memory": (batch, n, w),
        "link_matrix": (batch, 1, n, n),
        "precedence": (batch, 1, n),
        "read_weights": (batch, r, n),
        "write_weights": (batch, 1, n),
        "usage_vector": (batch, n),
    }


@pytest.fixture
def fresh_device_warnings(monkeypatch):
    """The once-per-process CUDA warning fires again in this test."""
    if torch.cuda.is_available():
        pytest.skip("the CPU fallback warning only happens without CUDA")
    monkeypatch.setattr(memfn.compat, "_warned_devices", set())


# -- constructor -----------------------------------------------------------------------------------


def test_constructor_has_the_dnc_1_1_0_signature():
    params = list(inspect.signature(DNC).parameters.values())
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == [name for name, _ in DNC_110_SIGNATURE]
    for p, (name, default) in zip(positional, DNC_110_SIGNATURE):
        if name != "share_memory":  # a sentinel (so the 2.0 alias can be told apart); behaviour below
            assert p.default == default, name
    # Our own options are keyword-only, so positional calls written for dnc keep their meaning.
    extra = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert {"device", "share_memory_between_layers", "output_size", "compile"} <= extra


def test_positional_call_as_written_for_dnc():
    rnn = DNC(I, H, "gru", 2, 1, True, False, 0, False, 7, 3, 5, "tanh", -1, False, False, False, 10)
    assert (rnn.rnn_type, rnn.num_layers, rnn.num_hidden_layers, rnn.batch_first) == ("gru", 2, 1, False)
    assert (rnn.nr_cells, rnn.read_heads, rnn.cell_size, rnn.share_memory, rnn.clip) == (7, 3, 5, False, 10)


def test_share_memory_defaults_to_true():
    rnn = small(num_layers=2)
    assert rnn.share_memory is True and len(rnn.memories) == 1
    _, (chx, mhx, _) = rnn(x_of())
    assert type(mhx) is dict and len(chx) == 2


@pytest.mark.parametrize("value", [True, False])
def test_share_memory_between_layers_is_an_alias(value):
    a = small(num_layers=2, share_memory=value)
    b = small(num_layers=2, share_memory_between_layers=value)
    c = small(num_layers=2, share_memory=value, share_memory_between_layers=value)
    assert a.share_memory == b.share_memory == c.share_memory == value
    assert len(a.memories) == len(b.memories) == (1 if value else 2)


def test_conflicting_aliases_raise():
    with pytest.raises(ValueError, match="share_memory=True and share_memory_between_layers=False disagree"):
        small(share_memory=True, share_memory_between_layers=False)
    with pytest.raises(ValueError, match="gpu_id=0 and device='cpu' disagree"):
        small(gpu_id=0, device="cpu")


def test_device_alias_cpu():
    rnn = small(device="cpu")
    assert all(p.device.type == "cpu" for p in rnn.parameters())
    rnn = small(device=torch.device("cpu"), gpu_id=-1)
    assert all(p.device.type == "cpu" for p in rnn.parameters())


@pytest.mark.parametrize("kwargs", [{"gpu_id": 0}, {"device": "cuda"}, {"device": "cuda:0", "gpu_id": 0}])
def test_cuda_without_cuda_warns_once_and_runs_on_cpu(fresh_device_warnings, kwargs):
    with pytest.warns(UserWarning, match="running on CPU instead"):
        rnn = small(**kwargs)
    assert all(p.device.type == "cpu" for p in rnn.parameters())
    out, (_, mhx, rv) = rnn(x_of())
    memory = mhx[0] if "device" in kwargs else mhx  # device= speaks pytorch-dnc 2.0: one dict per memory
    assert out.device.type == memory["memory"].device.type == rv.device.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device per process: no second warning
        small(**kwargs)


def test_to_device_moves_everything():
    """No tensor lives outside parameters and buffers, so ``.to(device)`` leaves nothing behind
    (dnc keeps its ``1 - eye(N)`` mask as a plain attribute). The meta device stands in for CUDA."""
    rnn = small(num_layers=2, share_memory=False)
    for module in rnn.modules():
        assert not [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
    rnn.to("meta")
    assert all(t.device.type == "meta" for t in [*rnn.parameters(), *rnn.buffers()])
    out, hidden = rnn(torch.empty(B, T, I, device="meta"))
    assert out.shape == (B, T, I) and all(t.device.type == "meta" for t in leaves(hidden))


@pytest.mark.parametrize("convert", [lambda m: m.to(torch.float64), lambda m: m.double()])
def test_float64(convert):
    rnn = convert(small(num_layers=2))
    assert all(p.dtype == torch.float64 for p in rnn.parameters())
    out, hidden = rnn(x_of(dtype=torch.float64))
    assert out.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in leaves(hidden))
    # The state carries on in float64 too.
    out2, _ = rnn(x_of(dtype=torch.float64), hidden)
    assert out2.dtype == torch.float64


@pytest.mark.parametrize(
    ("rnn_type", "nonlinearity", "state"),
    [
        ("lstm", "tanh", tuple),
        ("gru", "tanh", torch.Tensor),
        ("rnn", "tanh", torch.Tensor),
        ("rnn", "relu", torch.Tensor),
    ],
)
def test_rnn_types(rnn_type, nonlinearity, state):
    rnn = small(rnn_type=rnn_type, nonlinearity=nonlinearity)
    out, (chx, _, _) = rnn(x_of())
    assert out.shape == (B, T, I) and torch.isfinite(out).all()
    assert isinstance(chx[0], state)
    names = {n.split(".")[-1] for n, _ in rnn.controllers.named_parameters()}
    assert names == {f"{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in range(2)}
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[rnn_type]
    assert rnn.controllers[0].weight_hh_l0.shape == (gates * H, H)


def test_rnn_type_is_case_insensitive_as_in_dnc():
    assert small(rnn_type="LSTM").rnn_type == "lstm"


def test_nonlinearity_changes_the_rnn_controller():
    tanh = small(rnn_type="rnn", nonlinearity="tanh")
    relu = twin(tanh, rnn_type="rnn", nonlinearity="relu")
    x = x_of()
    assert not torch.allclose(tanh(x)[0], relu(x)[0])


def test_bidirectional_is_not_implemented():
    with pytest.raises(NotImplementedError, match="bidirectional=True is not supported"):
        small(bidirectional=True)


@pytest.mark.parametrize("num_hidden_layers", [1, 3])
def test_num_layers_stack_dnc_layers_and_num_hidden_layers_stack_controller_layers(num_hidden_layers):
    rnn = small(num_layers=3, num_hidden_layers=num_hidden_layers)
    assert len(rnn.controllers) == len(rnn.interfaces) == 3
    for layer, ctrl in enumerate(rnn.controllers):
        names = dict(ctrl.named_parameters())
        assert {n for n in names if n.startswith("weight_ih")} == {f"weight_ih_l{k}" for k in range(num_hidden_layers)}
        # Layer 0 reads [x ; r]; the layers above read [h ; r] of the layer below.
        assert names["weight_ih_l0"].shape == (4 * H, (I if layer == 0 else H) + R * W)
    out, (chx, _, _) = rnn(x_of())
    assert out.shape == (B, T, I)
    assert len(chx) == 3 and all(h.shape == c.shape == (num_hidden_layers, B, H) for h, c in chx)


def test_share_memory_false_gives_each_layer_its_own_memory():
    rnn = small(num_layers=2, share_memory=False)
    assert len(rnn.memories) == 2
    _, (_, mhx, _) = rnn(x_of())
    assert isinstance(mhx, list) and len(mhx) == 2
    assert not torch.allclose(mhx[0]["memory"], mhx[1]["memory"])
    # Shared: one memory, stepped by both layers in turn.
    shared = twin(rnn, num_layers=2, share_memory=True)
    _, (_, smhx, _) = shared(x_of())
    assert type(smhx) is dict


def test_independent_linears_names_and_equivalence_to_the_fused_linear():
    fused = small(num_layers=2)
    indep = small(num_layers=2, independent_linears=True)
    names = [n for n, _ in indep.named_parameters() if n.startswith("interfaces.0.")]
    fields = [name for name, _ in interface_layout(R, W)]  # DNCInterface's fields present by default
    assert names == [f"interfaces.0.{f}_transform.{p}" for f in fields for p in ("weight", "bias")]
    assert not any(n.startswith("interfaces.") and n.count(".") == 2 for n, _ in indep.named_parameters())
    # Copy the fused weights into the per-field linears: the same network.
    state = {k: v for k, v in fused.state_dict().items() if not k.startswith("interfaces.")}
    sizes = interface_field_sizes(R, W)
    for layer in range(2):
        ws = fused.state_dict()[f"interfaces.{layer}.weight"].split(sizes)
        bs = fused.state_dict()[f"interfaces.{layer}.bias"].split(sizes)
        for f, w, b in zip(fields, ws, bs):
            state[f"interfaces.{layer}.{f}_transform.weight"] = w
            state[f"interfaces.{layer}.{f}_transform.bias"] = b
    indep.load_state_dict(state)
    x = x_of()
    out_f, hid_f = fused(x)
    out_i, hid_i = indep(x)
    torch.testing.assert_close(out_i, out_f)
    assert_trees_close(hid_i, hid_f)
    # Gradients reach every per-field linear.
    out_i.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in indep.interfaces.parameters())


# -- forward ---------------------------------------------------------------------------------------


def test_batch_first_layouts():
    bf = small()
    tf = twin(bf, batch_first=False)
    x = x_of()
    out_bf, hid_bf = bf(x)
    out_tf, hid_tf = tf(x.transpose(0, 1).contiguous())
    assert out_bf.shape == (B, T, I) and out_tf.shape == (T, B, I)
    torch.testing.assert_close(out_tf.transpose(0, 1), out_bf)
    assert_trees_close(hid_tf, hid_bf)


@pytest.mark.parametrize("batch_first", [True, False])
def test_packed_sequence_in_packed_sequence_out(batch_first):
    rnn = small(num_layers=2, batch_first=batch_first)
    x = x_of(time=9)
    lengths = torch.tensor([4, 9, 6])
    packed = pack_padded_sequence(
        x if batch_first else x.transpose(0, 1), lengths, batch_first=batch_first, enforce_sorted=False
    )
    out, (chx, mhx, rv) = rnn(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    padded, out_lengths = pad_packed_sequence(out, batch_first=True)
    assert padded.shape == (B, 9, I) and out_lengths.tolist() == lengths.tolist()
    for b, n in enumerate(lengths.tolist()):
        # Steps past a sequence's length leave its state alone: running it alone gives the same.
        alone = twin(rnn, num_layers=2, batch_first=True)
        o, (c1, m1, r1) = alone(x[b : b + 1, :n])
        torch.testing.assert_close(padded[b, :n], o[0])
        assert (padded[b, n:] == 0).all()
        for (h, c), (h1, c1_) in zip(chx, c1):
            torch.testing.assert_close(h[:, b], h1[:, 0])
            torch.testing.assert_close(c[:, b], c1_[:, 0])
        for k in KEYS:
            torch.testing.assert_close(mhx[k][b], m1[k][0])
        torch.testing.assert_close(rv[b], r1[0])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rnn_type": "gru", "num_layers": 2, "share_memory": False}, {"num_layers": 2, "batch_first": False}],
)
def test_carrying_the_hidden_state_continues_exactly(kwargs):
    rnn = small(**kwargs)
    x = x_of(time=9)
    if not rnn.batch_first:
        x = x.transpose(0, 1)
    first, rest = (x[:, :5], x[:, 5:]) if rnn.batch_first else (x[:5], x[5:])
    whole, hid = rnn(x)
    a, hid_a = rnn(first)
    b, hid_b = rnn(rest, hid_a)
    torch.testing.assert_close(torch.cat([a, b], 1 if rnn.batch_first else 0), whole, atol=1e-5, rtol=1e-5)
    assert_trees_close(hid_b, hid, atol=1e-5, rtol=1e-5)


def test_reset_experience_clears_memory_but_keeps_the_controller_state():
    rnn = small(num_layers=2)
    chx, mhx, rv = rnn(x_of())[1]
    x = x_of()
    out_reset, hid_reset = rnn(x, (chx, mhx, rv), reset_experience=True)
    out_fresh, hid_fresh = rnn(x, (chx, None, rv))
    torch.testing.assert_close(out_reset, out_fresh)
    assert_trees_close(hid_reset, hid_fresh)
    # ... and it is not the same as keeping the memory, nor as dropping the controller state.
    assert not torch.allclose(rnn(x, (chx, mhx, rv))[0], out_reset)
    assert not torch.allclose(rnn(x, (None, None, rv))[0], out_reset)
    # No hidden state at all (the issue's example): fine too.
    out, _ = rnn(x, (None, None, None), reset_experience=True)
    torch.testing.assert_close(out, rnn(x)[0])


def test_pass_through_memory_false_bypasses_memory():
    rnn = small(num_layers=2)
    chx, mhx, rv = rnn(x_of())[1]
    x = x_of()
    out, (_, mhx2, rv2) = rnn(x, (chx, mhx, rv), pass_through_memory=False)
    assert out.shape == (B, T, I)
    assert rv2 is None  # dnc 1.1.0's read vectors without the memory
    assert_trees_close(mhx2, mhx, atol=0, rtol=0)  # memory untouched
    # pytorch-dnc 2.0 returns zeros instead; a model speaking 2.0 does too, with the same output.
    rnn2 = twin(rnn, num_layers=2, api="2.0")
    out2, (_, mhx3, rv3) = rnn2(x, (chx, [mhx], rv), pass_through_memory=False)
    assert (rv3 == 0).all() and rv3.shape == rv.shape
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    assert type(mhx3) is list and len(mhx3) == 1
    assert_trees_close(mhx3[0], mhx, atol=0, rtol=0)
    # None read vectors are accepted on input as zeros.
    torch.testing.assert_close(rnn(x, (chx, mhx, None))[0], rnn(x, (chx, mhx, torch.zeros_like(rv)))[0])


def test_initial_state_is_deterministic_zeros():
    rnn = small(num_layers=2)
    x = x_of()
    out1, hid1 = rnn(x)
    out2, hid2 = rnn(x)
    assert torch.equal(out1, out2)
    assert_trees_close(hid1, hid2, atol=0, rtol=0)
    zeros = rnn.initial_state(None, B, False, x)
    assert all((t == 0).all() for t in leaves(zeros))
    for ctrl in zeros.controller:
        assert ctrl.h.data_ptr() != ctrl.c.data_ptr()  # not one tensor for h and c, as in dnc
    # Passing explicit zero state equals passing nothing.
    chx0 = [(torch.zeros(2, B, H), torch.zeros(2, B, H)) for _ in range(2)]
    torch.testing.assert_close(rnn(x, (chx0, None, torch.zeros(B, R * W)))[0], out1)
    # The returned h and c are distinct tensors.
    for h, c in hid1[0]:
        assert h.data_ptr() != c.data_ptr() and not torch.equal(h, c)


def test_hx_none_is_accepted():
    rnn = small()
    x = x_of()
    torch.testing.assert_close(rnn(x, None)[0], rnn(x)[0])
    torch.testing.assert_close(rnn(x, [None, None, None])[0], rnn(x)[0])


@pytest.mark.parametrize("reset_experience", [False, True])
def test_hidden_passed_in_is_not_mutated(reset_experience):
    rnn = small(num_layers=2, share_memory=False)
    hidden = rnn(x_of())[1]
    hidden = optree.tree_map(lambda t: t.detach(), hidden)
    before = optree.tree_map(torch.clone, hidden)
    rnn(x_of(), hidden, reset_experience=reset_experience)
    assert_trees_close(hidden, before, atol=0, rtol=0)


def test_hidden_state_carries_gradients_and_detaches():
    rnn = small()
    _, hid = rnn(x_of())
    out, _ = rnn(x_of(), memfn.detach(hid))
    out.sum().backward()
    assert all(p.grad is not None for p in rnn.parameters())
    assert not any(t.requires_grad for t in leaves(memfn.detach(hid)))


# -- hidden state structure ------------------------------------------------------------------------


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("share_memory", [True, False])
def test_hidden_structure_and_shapes(rnn_type, share_memory):
    rnn = small(rnn_type=rnn_type, num_layers=2, num_hidden_layers=3, share_memory=share_memory)
    out, (chx, mhx, rv) = rnn(x_of())
    assert isinstance(chx, list) and len(chx) == 2
    for layer in chx:
        if rnn_type == "lstm":
            assert isinstance(layer, tuple) and len(layer) == 2
            h, c = layer
            assert h.shape == c.shape == (3, B, H)
        else:
            assert isinstance(layer, torch.Tensor) and layer.shape == (3, B, H)
    mems = [mhx] if share_memory else mhx
    assert type(mhx) is (dict if share_memory else list) and len(mems) == (1 if share_memory else 2)
    for m in mems:
        assert type(m) is dict and tuple(m.keys()) == KEYS
        assert {k: tuple(m[k].shape) for k in KEYS} == memory_shapes(B)
    assert rv.shape == (B, R * W)


def test_memory_state_reports_unknown_keys():
    _, (_, mhx, _) = small()(x_of())
    with pytest.raises(KeyError, match="'memroy'"):
        mhx["memroy"]


@pytest.mark.parametrize("share_memory", [True, False])
@pytest.mark.parametrize("flatten", ["optree", "torch"])
def test_plain_containers_rebuilt_from_flat_tensors_are_accepted(share_memory, flatten):
    """What RL libraries do: flatten the hidden state to a list of tensors, store it, rebuild it
    from plain lists, tuples and dicts, and pass it back."""
    rnn = small(num_layers=2, share_memory=share_memory)
    _, hidden = rnn(x_of())
    flat, spec = optree.tree_flatten(hidden) if flatten == "optree" else pytree.tree_flatten(hidden)
    assert all(isinstance(t, torch.Tensor) for t in flat)
    # The structure round-trips through either pytree library unchanged.
    back = optree.tree_unflatten(spec, flat) if flatten == "optree" else pytree.tree_unflatten(flat, spec)
    assert _structure(back) == _structure(hidden) and type(back[1]) is type(hidden[1])
    assert_trees_close(back, hidden, atol=0, rtol=0)
    # Rebuilt by hand from a flat list, in dnc's key order (what ``list(mhx.values())`` gives).
    chx, mhx, rv = hidden
    mems = [mhx] if share_memory else mhx
    values = iter([t.clone() for m in mems for t in m.values()])
    rebuilt_mems = [OrderedDict((k, next(values)) for k in KEYS) for _ in mems]
    rebuilt = ([tuple(t.clone() for t in layer) for layer in chx], rebuilt_mems[0] if share_memory else rebuilt_mems,
               rv.clone())  # fmt: skip
    x = x_of()
    out_a, hid_a = rnn(x, hidden)
    out_b, hid_b = rnn(x, rebuilt)
    torch.testing.assert_close(out_b, out_a, atol=0, rtol=0)
    assert_trees_close(hid_b, hid_a, atol=0, rtol=0)


# -- against the dnc package -----------------------------------------------------------------------

CONFIGS = [
    {"rnn_type": "lstm", "num_layers": 2, "share_memory": True},
    {"rnn_type": "gru", "num_layers": 2, "share_memory": False, "num_hidden_layers": 1},
    {"rnn_type": "rnn", "num_layers": 1, "batch_first": False},
]


def _structure(tree):
    """Containers and leaf shapes, with the state NamedTuples seen as what they stand for."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape)
    if isinstance(tree, (dict, DNCState)):
        return {k: _structure(tree[k]) for k in tree.keys()}
    if isinstance(tree, list):
        return [_structure(t) for t in tree]
    if isinstance(tree, tuple):
        return tuple(_structure(t) for t in tree)
    raise TypeError(type(tree))


def test_signature_equals_the_dnc_package():
    dnc = pytest.importorskip("dnc")
    ref = list(inspect.signature(dnc.DNC).parameters.values())
    ours = [p for p in inspect.signature(DNC).parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in ours] == [p.name for p in ref]
    assert [p.default for p in ours if p.name != "share_memory"] == [p.default for p in ref if p.name != "share_memory"]


@pytest.mark.parametrize("config", CONFIGS)
def test_structure_and_shapes_equal_the_dnc_package(config):
    dnc = pytest.importorskip("dnc")
    kwargs = {"nr_cells": N, "cell_size": W, "read_heads": R, "debug": True, **config}
    x = x_of()
    if not config.get("batch_first", True):
        x = x.transpose(0, 1).contiguous()
    ref_out, ref_hidden, ref_debug = dnc.DNC(I, H, **kwargs)(x)
    out, hidden, debug = DNC(I, H, **kwargs)(x)
    assert out.shape == ref_out.shape
    assert _structure(hidden) == _structure(ref_hidden)
    assert debug.keys() == ref_debug.keys()
    assert {k: v.shape for k, v in debug.items()} == {k: v.shape for k, v in ref_debug.items()}
    assert all(v.dtype == ref_debug[k].dtype for k, v in debug.items())


def test_memory_view_agrees_with_the_dnc_package_memory():
    dnc = pytest.importorskip("dnc")
    rnn = small()
    mhx = memfn.detach(rnn(x_of())[1][1])
    ref = dnc.Memory(H, mem_size=N, cell_size=W, read_heads=R)
    args = _write_args()
    ours = rnn.memories[0].write(**args, hidden=mhx)
    theirs = ref.write(**args, hidden={k: mhx[k].clone() for k in KEYS})
    for k in KEYS:
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=1e-4)
    keys, strengths, modes = _read_args()
    v_ours, s_ours = rnn.memories[0].read(keys, strengths, modes, ours)
    v_theirs, s_theirs = ref.read(keys, strengths, modes, {k: theirs[k].clone() for k in KEYS})
    torch.testing.assert_close(v_ours, v_theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s_ours["read_weights"], s_theirs["read_weights"], atol=1e-5, rtol=1e-4)


# -- rnn.memories[i] -------------------------------------------------------------------------------


def _write_args(batch=B):
    """Activated write arguments in dnc's ``Memory.write`` shapes."""
    return {
        "write_key": torch.randn(batch, 1, W),
        "write_vector": torch.randn(batch, 1, W),
        "erase_vector": torch.rand(batch, 1, W),
        "free_gates": torch.rand(batch, R),
        "read_strengths": 1 + torch.rand(batch, R),
        "write_strength": 1 + torch.rand(batch, 1),
        "write_gate": torch.rand(batch, 1),
        "allocation_gate": torch.rand(batch, 1),
    }


def _read_args(batch=B):
    """Read keys ``(B, R, W)``, strengths ``(B, R)``, modes ``(B, R, 3)``, as dnc's ``Memory.read``."""
    return torch.randn(batch, R, W), 1 + torch.rand(batch, R), torch.softmax(torch.randn(batch, R, 3), -1)


@pytest.mark.parametrize("share_memory", [True, False])
def test_memory_view_write_and_read_agree_with_the_pure_functions(share_memory):
    rnn = small(num_layers=2, share_memory=share_memory)
    _, (_, mhx, _) = rnn(x_of())
    view = rnn.memories[-1]
    state = memfn.detach(mhx if share_memory else mhx[-1])
    before = optree.tree_map(torch.clone, state)
    args = _write_args()
    new = view.write(**args, hidden=state)
    assert type(new) is dict and {k: tuple(new[k].shape) for k in KEYS} == memory_shapes(B)
    keys, strengths, modes = _read_args()
    reads, after = view.read(keys, strengths, modes, new)
    assert reads.shape == (B, R, W)
    for b in range(B):  # the unbatched pure core, one example at a time
        one = DNCState(*(t[b] for t in state.values()))
        io = DNCInterface(
            read_keys=keys[b], read_strengths=strengths[b], write_key=args["write_key"][b],
            write_strength=args["write_strength"][b], erase_vector=args["erase_vector"][b, 0],
            write_vector=args["write_vector"][b, 0], free_gates=args["free_gates"][b],
            allocation_gate=args["allocation_gate"][b], write_gate=args["write_gate"][b], read_modes=modes[b],
        )  # fmt: skip
        written = dense_write(one, io)
        assert_trees_close(DNCState(*(t[b] for t in new.values())), written)
        r_b, s_b = dense_read(written, keys[b], strengths[b], modes[b])
        torch.testing.assert_close(reads[b], r_b)
        assert_trees_close(DNCState(*(t[b] for t in after.values())), s_b)
    assert_trees_close(state, before, atol=0, rtol=0)  # not mutated
    # A plain dict is accepted as the hidden state too.
    new_from_dict = view.write(**args, hidden={k: state[k] for k in KEYS})
    assert_trees_close(new_from_dict, new, atol=0, rtol=0)


def test_memory_view_reset():
    rnn = small()
    view = rnn.memories[0]
    zero = view.reset(B)
    assert {k: tuple(zero[k].shape) for k in KEYS} == memory_shapes(B)
    assert type(zero) is dict and all((t == 0).all() for t in zero.values())
    assert {k: tuple(v.shape) for k, v in view.reset().items()} == memory_shapes(1)
    _, (_, mhx, _) = rnn(x_of())
    kept = view.reset(B, {k: mhx[k] for k in KEYS}, erase=False)
    assert_trees_close(kept, mhx, atol=0, rtol=0)
    assert all(kept[k].data_ptr() != mhx[k].data_ptr() for k in KEYS)  # a copy
    erased = view.reset(B, mhx, erase=True)
    assert all((t == 0).all() for t in erased.values()) and (mhx["memory"] != 0).any()


def test_memory_view_forward_is_one_memory_step():
    rnn = small()
    _, (_, mhx, _) = rnn(x_of())
    h = torch.randn(B, H)
    reads, state = rnn.memories[0](h, mhx)
    xi = torch.nn.functional.linear(h, rnn.interfaces[0].weight, rnn.interfaces[0].bias)
    ref_reads, ref_state = torch.func.vmap(rnn.pure_memory.step)(DNCState(**mhx), xi)
    torch.testing.assert_close(reads, ref_reads)
    assert_trees_close(state, ref_state)


# -- debug -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("share_memory", [True, False])
def test_debug_returns_dnc_views_of_batch_element_0(share_memory):
    layers = 2
    rnn = small(num_layers=layers, share_memory=share_memory, debug=True)
    out, (chx, mhx, rv), debug = rnn(x_of())
    assert out.shape == (B, T, I)
    assert tuple(debug) == KEYS
    widths = {k: int(np.prod(s[1:])) for k, s in memory_shapes(B).items()}
    for k in KEYS:
        assert isinstance(debug[k], np.ndarray) and debug[k].shape == (layers * T, widths[k])
    # The last row is the final state of batch element 0 (of the last layer's memory).
    last = mhx if share_memory else mhx[-1]
    for k in KEYS:
        np.testing.assert_allclose(debug[k][-1], last[k][0].detach().reshape(-1).numpy())
    if not share_memory:  # rows alternate between the layers' memories, time-major as in dnc
        for k in KEYS:
            np.testing.assert_allclose(debug[k][-2], mhx[0][k][0].detach().reshape(-1).numpy())


def test_debug_output_equals_the_plain_module():
    rnn = small(num_layers=2)
    dbg = twin(rnn, num_layers=2, debug=True)
    x = x_of()
    out, hid = rnn(x)
    out_d, hid_d, _ = dbg(x)
    torch.testing.assert_close(out_d, out)
    assert_trees_close(hid_d, hid)


def test_debug_with_packed_input_freezes_rows_past_element_0_length():
    rnn = small(num_layers=2, debug=True)
    x = x_of(time=6)
    packed = pack_padded_sequence(x, torch.tensor([3, 6, 5]), batch_first=True, enforce_sorted=False)
    _, (_, mhx, _), debug = rnn(packed)
    assert debug["memory"].shape == (2 * 6, N * W)
    for k in KEYS:
        final = mhx[k][0].detach().reshape(-1).numpy()
        np.testing.assert_allclose(debug[k][-1], final)
        np.testing.assert_allclose(debug[k][2 * 3 - 1], final)  # element 0's last real step


# -- functional and compiled paths -----------------------------------------------------------------


def test_functional_call_equals_forward():
    rnn = small(num_layers=2)
    x = x_of()
    hx = memfn.detach(rnn(x_of())[1])
    params = {k: v.detach().clone() for k, v in rnn.named_parameters()}
    out, hid = torch.func.functional_call(rnn, params, (x, hx))
    ref_out, ref_hid = rnn(x, hx)
    torch.testing.assert_close(out, ref_out)
    assert_trees_close(hid, ref_hid)
    # Other parameters really are used, and the module's own are left alone.
    scaled = {k: 0.5 * v for k, v in params.items()}
    other = copy.deepcopy(rnn)
    other.load_state_dict(scaled)
    torch.testing.assert_close(torch.func.functional_call(rnn, scaled, (x, hx))[0], other(x, hx)[0])
    torch.testing.assert_close(rnn(x, hx)[0], ref_out)
    # torch.func.grad through the module equals autograd.
    x = x[:, :3]
    grads = torch.func.grad(lambda p: torch.func.functional_call(rnn, p, (x, hx))[0].square().sum())(params)
    rnn.zero_grad()
    rnn(x, hx)[0].square().sum().backward()
    for k, p in rnn.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, atol=1e-5, rtol=1e-4)


def test_vmap_over_stacked_modules_is_an_ensemble():
    models = [small(num_layers=2) for _ in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = x_of()

    def one(p, b, x):
        return torch.func.functional_call(base, (p, b), (x,))

    outs, hidden = torch.func.vmap(one, in_dims=(0, 0, None))(params, buffers, x)
    assert outs.shape == (3, B, T, I)
    for i, model in enumerate(models):
        out_i, hid_i = model(x)
        torch.testing.assert_close(outs[i], out_i)
        assert_trees_close(optree.tree_map(lambda t, i=i: t[i], hidden), hid_i)
    assert not torch.allclose(outs[0], outs[1])


needs_stance = pytest.mark.skipif(
    not hasattr(torch.compiler, "set_stance"), reason="torch.compiler.set_stance needs torch >= 2.6"
)


@needs_stance
def test_compiled_equals_eager_and_compiles_once_for_all_lengths():
    # One compile (~10-40 s cold) in the default run; no_grad keeps it to the forward graph.
    eager = small(num_layers=2)
    compiled = twin(eager, num_layers=2, compile=True)
    with torch.no_grad():
        x = x_of()
        out_c, hid_c = compiled(x)
        out_e, hid_e = eager(x)
        torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
        assert_trees_close(hid_c, hid_e)
        with torch.compiler.set_stance("fail_on_recompile"):
            x2 = x_of(time=T + 4)
            out_c2, hid_c2 = compiled(x2, hid_c)
            out_c3, _ = compiled(x_of(time=2))
        out_e2, hid_e2 = eager(x2, hid_e)
        torch.testing.assert_close(out_c2, out_e2, atol=1e-5, rtol=1e-5)
        assert_trees_close(hid_c2, hid_e2)
        assert out_c3.shape == (B, 2, I)


@needs_stance
def test_compile_method_switches_to_the_compiled_step():
    rnn = small(num_layers=2)
    assert rnn._step() is rnn._eager_step
    x = x_of()
    with torch.no_grad():
        out_e, hid_e = rnn(x)
        rnn.compile()  # same config as above: the compiled graph comes from inductor's cache
        step = rnn._step()
        assert step is not rnn._eager_step and rnn._step() is step
        out_c, hid_c = rnn(x)
        with torch.compiler.set_stance("fail_on_recompile"):
            rnn(x_of(time=3))
    torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
    assert_trees_close(hid_c, hid_e)


@pytest.mark.slow
@needs_stance
# Dynamo probes `.grad` of the (non-leaf) state tensors while tracing and hides the warning that
# raises with its own filter, which the test-wide "error" filter overrides; not memfn's warning.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_compiled_gradients_equal_eager():
    eager = small(num_layers=2)
    compiled = twin(eager, num_layers=2, compile=True)
    x = x_of()
    for model in (eager, compiled):
        out, hid = model(x)
        (out.square().sum() + hid[1]["memory"].sum()).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.compiler.set_stance("fail_on_recompile"):
        out, hid = compiled(x_of(time=3), memfn.detach(hid))
        compiled(x_of(time=5), hid)[0].sum().backward()


@pytest.mark.slow
@needs_stance
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_compiled_float64_outputs_state_and_gradients_equal_eager_to_1e_10():
    # In float64 the compiled step is the eager maths to rounding: only the order of floating-point
    # operations may differ (fusion), so 1e-10 leaves ~1e5 ulps of room and catches any real change.
    eager = small(num_layers=2).double()
    compiled = twin(eager, num_layers=2, compile=True).double()
    x = x_of(dtype=torch.float64)
    results = []
    for model in (eager, compiled):
        out, hid = model(x)
        (out.square().sum() + hid[1]["memory"].sum()).backward()
        results.append((out.detach(), memfn.detach(hid)))
    (out_e, hid_e), (out_c, hid_c) = results
    torch.testing.assert_close(out_c, out_e, atol=1e-10, rtol=1e-10)
    assert_trees_close(hid_c, hid_e, atol=1e-10, rtol=1e-10)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-10, rtol=1e-10, msg=name)
    with torch.compiler.set_stance("fail_on_recompile"):  # a new length, with gradients: no recompile
        compiled(x_of(time=T + 3, dtype=torch.float64), hid_c)[0].sum().backward()


@pytest.mark.parametrize("cls,default", [(DNC, "memoryless"), (memfn.SAM, "torch"), (memfn.SDNC, "torch")])
def test_controller_initialisation_defaults_and_choice(cls, default):
    kwargs = dict(input_size=4, hidden_size=8, num_layers=2, nr_cells=8, cell_size=3, read_heads=1)
    if cls is not DNC:
        kwargs.update(sparse_reads=2, **({"temporal_reads": 2} if cls is memfn.SDNC else {}))
    assert cls(**kwargs).controller_init == default
    memoryless, torch_init = cls(**kwargs, controller_init="memoryless"), cls(**kwargs, controller_init="torch")
    for layer in range(2):
        for k in range(2):  # num_hidden_layers
            assert torch.count_nonzero(getattr(memoryless.controllers[layer], f"weight_hh_l{k}")) == 0
            assert torch.count_nonzero(getattr(torch_init.controllers[layer], f"weight_hh_l{k}")) > 0
            forget = getattr(memoryless.controllers[layer], f"bias_ih_l{k}")[8:16]
            assert torch.all(forget == memfn.controllers.MEMORYLESS_GATE_BIAS)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rnn_type": "lstmx"}, ValueError, r"rnn_type must be one of 'lstm', 'gru', 'rnn'; got 'lstmx'"),
        ({"read_heads": 0}, ValueError, r"read_heads must be an integer >= 1, got 0"),
        ({"nonlinearity": "sigmoid"}, ValueError, r"nonlinearity must be one of 'tanh', 'relu'; got 'sigmoid'"),
        ({"nr_cells": 0}, ValueError, r"nr_cells must be an integer >= 1, got 0"),
        ({"cell_size": 2.5}, ValueError, r"cell_size must be an integer >= 1, got 2.5"),
        ({"dropout": 1.5}, ValueError, r"dropout must be a number in \[0, 1\), got 1.5"),
        ({"num_layers": 0}, ValueError, r"num_layers must be an integer >= 1, got 0"),
        ({"controller_init": "zeros"}, ValueError, r"controller_init must be one of 'torch', 'memoryless'; got 'zer"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        small(**kwargs)


def test_bad_input_tensor():
    rnn = small()
    with pytest.raises(ValueError, match=r"input must have shape \(batch, time, input_size\) .*got \(3, 6\)"):
        rnn(torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"input_size=6, got \(3, 7, 5\)"):
        rnn(torch.randn(3, 7, 5))
    with pytest.raises(ValueError, match=r"\(time, batch, input_size\) with input_size=6, got \(1, 3, 7, 6\)"):
        twin(rnn, batch_first=False)(torch.randn(1, 3, 7, 6))
    with pytest.raises(TypeError, match=r"input must be a floating-point tensor, got dtype=torch.int64"):
        rnn(torch.ones(3, 7, 6, dtype=torch.long))
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor or PackedSequence, got list"):
        rnn([[0.0] * 6])


def test_hidden_state_from_another_batch_size():
    rnn = small(num_layers=2)
    chx, mhx, rv = rnn(x_of(batch=3))[1]
    x = x_of(batch=2)
    with pytest.raises(ValueError, match=r"controller_hidden\[0\]\[0\] has shape \(2, 3, 12\), expected \(2, 2, 12\)"):
        rnn(x, (chx, mhx, rv))
    with pytest.raises(ValueError, match=r"memory\['memory'\] has shape \(3, 5, 4\), expected \(2, 5, 4\)"):
        rnn(x, (None, mhx, None))
    with pytest.raises(ValueError, match=r"read_vectors has shape \(3, 8\), expected \(2, 8\)"):
        rnn(x, (None, None, rv))


def test_hidden_state_from_another_config():
    x = x_of()
    rnn = small(num_layers=2)
    with pytest.raises(ValueError, match=r"memory\['memory'\] has shape \(3, 7, 4\), expected \(3, 5, 4\)"):
        rnn(x, (None, small(nr_cells=7)(x)[1][1], None))
    with pytest.raises(ValueError, match=r"controller_hidden\[0\]\[0\] has shape \(2, 3, 9\), expected \(2, 3, 12\)"):
        rnn(x, (DNC(I, 9, num_layers=2, nr_cells=N, cell_size=W, read_heads=R)(x)[1][0], None, None))
    with pytest.raises(ValueError, match=r"list of 2 layer states \(num_layers=2\), got a list of length 1"):
        rnn(x, (small()(x)[1][0], None, None))
    with pytest.raises(ValueError, match=r"must be an \(h, c\) pair for rnn_type='lstm', got a tensor of shape"):
        rnn(x, (small(rnn_type="gru", num_layers=2)(x)[1][0], None, None))
    with pytest.raises(TypeError, match=r"controller_hidden\[0\] must be a tensor, got tuple"):
        small(rnn_type="gru", num_layers=2)(x, (rnn(x)[1][0], None, None))
    with pytest.raises(ValueError, match=r"1 memory \(share_memory=True\), got a list of length 2"):
        rnn(x, (None, small(num_layers=2, share_memory=False)(x)[1][1], None))
    with pytest.raises(ValueError, match=r"hx memory must be a list of 2 dicts \(share_memory=False\), got a dict"):
        small(num_layers=2, share_memory=False)(x, (None, rnn(x)[1][1], None))
    with pytest.raises(ValueError, match=r"memory is missing keys \['usage_vector'\]"):
        rnn(x, (None, {k: v for k, v in zip(KEYS[:-1], rnn(x)[1][1].values())}, None))
    with pytest.raises(ValueError, match=r"hx must be None or a tuple \(.*\), got a tensor of shape \(3,\)"):
        rnn(x, torch.zeros(3))


# -- the issue's examples --------------------------------------------------------------------------


# Issue 3's two examples, character for character.
ISSUE_EXAMPLE_1 = """
from memfn import DNC
import torch
rnn = DNC(input_size=64, hidden_size=128, rnn_type='lstm', num_layers=4, nr_cells=100,
          cell_size=32, read_heads=4, batch_first=True, gpu_id=0)
(controller_hidden, memory, read_vectors) = (None, None, None)
output, (controller_hidden, memory, read_vectors) = rnn(
    torch.randn(10, 4, 64), (controller_hidden, memory, read_vectors), reset_experience=True)
"""
ISSUE_EXAMPLE_2 = """
rnn = DNC(input_size=64, hidden_size=128, rnn_type='lstm', num_layers=4, nr_cells=100,
          cell_size=32, read_heads=4, batch_first=True, gpu_id=0, debug=True)
output, (controller_hidden, memory, read_vectors), debug_memory = rnn(
    torch.randn(10, 4, 64), (None, None, None), reset_experience=True)
"""


def test_issue_examples_run_verbatim(fresh_device_warnings):
    batch, time, layers, n, w, r = 10, 4, 4, 100, 32, 4

    def check(ns):
        assert ns["output"].shape == (batch, time, 64)
        assert len(ns["controller_hidden"]) == layers
        assert all(h.shape == c.shape == (2, batch, 128) for h, c in ns["controller_hidden"])
        assert {k: tuple(ns["memory"][k].shape) for k in KEYS} == memory_shapes(batch, n=n, w=w, r=r)
        assert ns["read_vectors"].shape == (batch, r * w)

    namespace: dict = {}
    with pytest.warns(UserWarning, match="CPU"):
        exec(ISSUE_EXAMPLE_1, namespace)
    check(namespace)
    exec(ISSUE_EXAMPLE_2, namespace)  # warned once already: no second warning (warnings are errors)
    check(namespace)
    widths = {"memory": n * w, "link_matrix": n * n, "precedence": n, "read_weights": r * n, "write_weights": n}
    widths["usage_vector"] = n
    debug_memory = namespace["debug_memory"]
    assert list(debug_memory) == list(KEYS)
    assert {k: v.shape for k, v in debug_memory.items()} == {k: (layers * time, v) for k, v in widths.items()}


def test_checkpoint_every_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = DNC(input_size=5, hidden_size=12, nr_cells=6, cell_size=4, read_heads=2)
    lean = DNC(input_size=5, hidden_size=12, nr_cells=6, cell_size=4, read_heads=2, checkpoint_every=3)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 5)
    grads = []
    for model in (plain, lean):
        out, _ = model(x)
        out.square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1, got 0"):
        DNC(input_size=5, hidden_size=12, checkpoint_every=0)
