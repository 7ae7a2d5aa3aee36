"""The shells' hidden state as real pytorch-dnc code uses it (``memfn.compat``).

Every dict behaviour client code relies on, on all three shells; the 1.1.0 and 2.0 layouts and the
rule that picks one; a state flattened to tensors and rebuilt by hand continuing exactly; the
``pass_through_memory=False`` read vectors; the sparse debug keys.
"""

from __future__ import annotations

import copy
import io
import json
from collections import OrderedDict

import numpy as np
import optree
import pytest
import torch
import torch.utils._pytree as pytree

import memfn
import memfn.compat
from memfn import DNC, SAM, SDNC

I, H, N, W, R = 5, 8, 16, 4, 2
B, T = 2, 6

#: The memory keys each shell's hidden dict has, in order (the DNC's are pytorch-dnc's).
KEYS = {
    DNC: ("memory", "link_matrix", "precedence", "read_weights", "write_weights", "usage_vector"),
    SAM: ("memory", "read_positions", "read_weights", "write_positions", "write_weights", "last_access", "time"),
    SDNC: ("memory", "read_positions", "read_weights", "write_positions", "write_weights", "last_access", "time",
           "link_matrix", "link_positions", "rev_link_matrix", "rev_link_positions", "precedence",
           "precedence_positions"),
}  # fmt: skip

shells = pytest.mark.parametrize("cls", [DNC, SAM, SDNC], ids=["DNC", "SAM", "SDNC"])


def small(cls, **kwargs):
    sizes = {"nr_cells": N, "cell_size": W, "read_heads": R}
    if cls is not DNC:
        sizes["sparse_reads"] = 2
    if cls is SDNC:
        sizes["temporal_reads"] = 2
    return cls(I, H, **{**sizes, **kwargs})


def x_of(time=T):
    return torch.randn(B, time, I)


def memory_of(rnn, hidden) -> dict:
    """The (first) memory dict of a hidden state in the module's layout."""
    mhx = hidden[1]
    return mhx[0] if isinstance(mhx, list) else mhx


def assert_same(a, b, atol=0.0, rtol=0.0):
    la, lb = optree.tree_leaves(a), optree.tree_leaves(b)
    assert optree.tree_structure(a) == optree.tree_structure(b)
    for u, v in zip(la, lb):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)


# -- the dict behaviours --------------------------------------------------------------------------


@shells
def test_memory_state_is_a_plain_dict_with_every_dict_behaviour(cls):
    rnn = small(cls)
    _, hidden = rnn(x_of())
    mhx = hidden[1]
    keys = KEYS[cls]
    assert type(mhx) is dict
    assert tuple(mhx) == tuple(mhx.keys()) == keys and len(mhx) == len(keys)
    assert [k for k, _ in mhx.items()] == list(keys)
    assert all(v is mhx[k] for k, v in zip(keys, mhx.values()))
    assert "memory" in mhx and "memroy" not in mhx and mhx.get("memroy") is None
    assert mhx.get("memory") is mhx["memory"]
    with pytest.raises(KeyError):
        mhx["memroy"]
    assert dict(mhx) == mhx and copy.copy(mhx) == mhx and mhx.copy() is not mhx
    assert OrderedDict(mhx).keys() == mhx.keys()
    shapes = json.loads(json.dumps({k: list(v.shape) for k, v in mhx.items()}))
    assert shapes["memory"] == [B, N, W]
    # pytorch-dnc's training loop idiom, and memfn's helpers, on every leaf.
    detached = {k: v.detach() for k, v in mhx.items()}
    assert not any(v.requires_grad for v in detached.values())
    assert all(not v.requires_grad for v in optree.tree_leaves(memfn.detach(hidden)))
    cloned = memfn.clone(hidden)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(optree.tree_leaves(cloned), optree.tree_leaves(hidden)))
    moved = optree.tree_map(lambda t: t.to(torch.float64) if t.is_floating_point() else t, memfn.detach(hidden))
    assert moved[1]["memory"].dtype == torch.float64


@shells
def test_state_saves_and_loads_with_weights_only(cls):
    rnn = small(cls)
    _, hidden = rnn(x_of())
    buffer = io.BytesIO()
    torch.save(memfn.detach(hidden), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert type(loaded[1]) is dict and tuple(loaded[1]) == KEYS[cls]
    assert_same(loaded, memfn.detach(hidden))
    x = x_of()
    torch.testing.assert_close(rnn(x, loaded)[0], rnn(x, memfn.detach(hidden))[0], atol=0, rtol=0)


@shells
@pytest.mark.parametrize("library", ["optree", "torch"])
def test_state_flattens_and_unflattens_with_pytree_libraries(cls, library):
    rnn = small(cls, num_layers=2, share_memory=False)
    _, hidden = rnn(x_of())
    if library == "optree":
        leaves, spec = optree.tree_flatten(hidden)
        back = optree.tree_unflatten(spec, leaves)
    else:
        leaves, spec = pytree.tree_flatten(hidden)
        back = pytree.tree_unflatten(leaves, spec)
    assert all(isinstance(t, torch.Tensor) for t in leaves)
    assert type(back[1]) is list and all(type(m) is dict and tuple(m) == KEYS[cls] for m in back[1])
    assert_same(back, hidden)


@shells
@pytest.mark.parametrize("api", ["1.1", "2.0"])
def test_state_flattened_to_tensors_and_rebuilt_as_ordered_dicts_continues_exactly(cls, api):
    """What RL wrappers do between two calls: ``list(mhx.values())``, stored, then a plain
    ``OrderedDict`` rebuilt; the two calls equal one uninterrupted call."""
    rnn = small(cls, num_layers=2, api=api)
    x = x_of(time=8)
    whole, hidden_whole = rnn(x)
    first, (chx, mhx, rv) = rnn(x[:, :5])
    memories = mhx if isinstance(mhx, list) else [mhx]
    stored = [[t.detach().clone() for t in m.values()] for m in memories]  # plain lists of tensors
    stored_chx = [[t.detach().clone() for t in layer] for layer in chx]
    rebuilt_memories = [OrderedDict(zip(KEYS[cls], values)) for values in stored]
    rebuilt = (
        [tuple(layer) for layer in stored_chx],
        rebuilt_memories if api == "2.0" else rebuilt_memories[0],
        rv.detach().clone(),
    )
    second, hidden_end = rnn(x[:, 5:], rebuilt)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-6, rtol=1e-5)
    assert_same(memfn.detach(hidden_end), memfn.detach(hidden_whole), atol=1e-6, rtol=1e-5)


@shells
def test_pytorch_dnc_training_loop_idiom_runs(cls):
    """pytorch-dnc's own loops: ``mhx = {k: v.detach() for k, v in mhx.items()}`` after each step."""
    rnn = small(cls)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=1e-3)
    chx, mhx, rv = None, None, None
    for _ in range(3):
        optimizer.zero_grad()
        out, (chx, mhx, rv) = rnn(x_of(), (chx, mhx, rv))
        out.square().mean().backward()
        optimizer.step()
        chx = [tuple(t.detach() for t in layer) for layer in chx]
        mhx = {k: v.detach() for k, v in mhx.items()}
        rv = rv.detach()
    assert torch.isfinite(out).all()


# -- the two layouts and the rule --------------------------------------------------------------------


@shells
@pytest.mark.parametrize(
    ("kwargs", "api"),
    [
        ({}, "1.1"),
        ({"gpu_id": -1}, "1.1"),
        ({"device": None}, "2.0"),
        ({"device": "cpu"}, "2.0"),
        ({"share_memory_between_layers": True}, "2.0"),
        ({"device": None, "api": "1.1"}, "1.1"),
        ({"api": "2.0"}, "2.0"),
    ],
)
def test_the_release_spoken_follows_the_spelling(cls, kwargs, api):
    rnn = small(cls, **kwargs)
    assert rnn.api == api
    _, (_, mhx, _) = rnn(x_of())
    if api == "2.0":
        assert type(mhx) is list and len(mhx) == 1 and type(mhx[0]) is dict
        assert mhx[0]["memory"].shape == (B, N, W)
    else:
        assert type(mhx) is dict and mhx["memory"].shape == (B, N, W)


@shells
@pytest.mark.parametrize("api", ["1.1", "2.0"])
def test_unshared_memories_are_a_list_of_one_dict_per_layer(cls, api):
    rnn = small(cls, num_layers=3, share_memory=False, api=api)
    _, (_, mhx, _) = rnn(x_of())
    assert type(mhx) is list and len(mhx) == 3 and all(type(m) is dict for m in mhx)


@shells
@pytest.mark.parametrize("speaks", ["1.1", "2.0"])
@pytest.mark.parametrize("given", ["1.1", "2.0", "namedtuple", "ordereddict"])
def test_every_model_accepts_every_layout(cls, speaks, given):
    rnn = small(cls, api=speaks)
    _, hidden = rnn(x_of())
    chx, mhx, rv = memfn.clone(hidden)
    one = mhx[0] if isinstance(mhx, list) else mhx
    state_cls = {DNC: memfn.DNCState, SAM: memfn.SAMState, SDNC: memfn.SDNCState}[cls]
    memory = {
        "1.1": one,
        "2.0": [one],
        "namedtuple": state_cls(**one),
        "ordereddict": OrderedDict(reversed(list(one.items()))),  # any key order
    }[given]
    x = x_of()
    expected, _ = rnn(x, memfn.clone(hidden))
    got, (_, new, _) = rnn(x, (chx, memory, rv))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert type(new) is (list if speaks == "2.0" else dict)


@shells
def test_missing_parts_are_zeros(cls):
    """``None`` for any part, for a layer's memory (2.0 does that) or an empty 2.0 list: zeros."""
    rnn = small(cls, num_layers=2, share_memory=False)
    x = x_of()
    fresh, _ = rnn(x)
    chx, mhx, rv = rnn(x_of())[1]
    for hx in [None, (None, None, None), (None, [], None), (None, [None, None], None)]:
        torch.testing.assert_close(rnn(x, hx)[0], fresh, atol=0, rtol=0)
    partial, _ = rnn(x, (None, [None, memfn.clone(mhx[1])], None))
    expected, _ = rnn(x, (None, [rnn.memories[0].reset(B), memfn.clone(mhx[1])], None))
    torch.testing.assert_close(partial, expected, atol=0, rtol=0)


def test_bad_api_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"api must be one of '1.1', '2.0'; got '3'"):
        small(DNC, api="3")


def test_disagreeing_share_memory_spellings_are_refused():
    with pytest.raises(ValueError, match="share_memory=True and share_memory_between_layers=False disagree"):
        small(DNC, share_memory=True, share_memory_between_layers=False)


@shells
def test_wrong_number_of_memories_names_the_layout(cls):
    rnn = small(cls, num_layers=2, share_memory=False)
    _, (_, mhx, _) = rnn(x_of())
    with pytest.raises(ValueError, match=r"list of 2 dicts \(share_memory=False\), got a dict"):
        rnn(x_of(), (None, mhx[0], None))
    with pytest.raises(ValueError, match=r"one dict per memory, 2 layers \(share_memory=False\), got a list of len"):
        rnn(x_of(), (None, mhx[:1], None))


# -- pass_through_memory=False ----------------------------------------------------------------------


@shells
def test_no_memory_pass_read_vectors_follow_the_release(cls):
    rnn11, rnn20 = small(cls, api="1.1"), small(cls, api="2.0")
    rnn20.load_state_dict(rnn11.state_dict())
    x = x_of()
    out11, (_, mhx11, rv11) = rnn11(x, pass_through_memory=False)
    out20, (_, mhx20, rv20) = rnn20(x, pass_through_memory=False)
    assert rv11 is None
    assert rv20.shape == (B, R * W) and (rv20 == 0).all()
    torch.testing.assert_close(out11, out20, atol=0, rtol=0)
    assert_same(mhx11, mhx20[0])


# -- debug ---------------------------------------------------------------------------------------------


@shells
def test_debug_layouts_of_the_two_releases(cls):
    rnn11, rnn20 = small(cls, debug=True, api="1.1"), small(cls, debug=True, api="2.0")
    rnn20.load_state_dict(rnn11.state_dict())
    x = x_of()
    *_, d11 = rnn11(x)
    *_, d20 = rnn20(x)
    assert tuple(d11) == tuple(d20) == rnn11.debug_keys
    for key in rnn11.debug_keys:
        assert isinstance(d11[key], np.ndarray) and d11[key].shape[0] == T
        steps = d20[key]
        assert isinstance(steps, list) and len(steps) == T and all(a.ndim == 2 for a in steps)
        np.testing.assert_array_equal(np.stack([a.reshape(-1) for a in steps]), d11[key])


@pytest.mark.parametrize("cls", [SAM, SDNC], ids=["SAM", "SDNC"])
def test_sparse_debug_has_pytorch_dnc_keys_in_its_order(cls):
    rnn = small(cls, debug=True)
    _, (_, _, rv), debug = rnn(x_of())
    dnc_keys = ["memory", "visible_memory", "read_weights", "write_weights", "read_vectors", "least_used_mem",
                "usage", "read_positions"]  # fmt: skip
    if cls is SDNC:
        dnc_keys[2:2] = ["link_matrix", "rev_link_matrix", "precedence"]
    assert list(debug)[: len(dnc_keys)] == dnc_keys
    assert debug["read_vectors"].shape == (T, R * W) and debug["least_used_mem"].shape == (T, 1)
    np.testing.assert_allclose(debug["read_vectors"][-1], rv[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    # The least-used cell: the one unaccessed longest (usage counts steps since the last access),
    # the lowest index on ties.
    np.testing.assert_array_equal(debug["least_used_mem"][:, 0], debug["usage"].argmax(axis=1))
