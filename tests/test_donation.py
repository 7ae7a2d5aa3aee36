"""The SAM/SDNC fast path's buffer donation through every alias, the faiss index cache after edits,
and the custom operators under autocast.

A second use of a consumed state, whatever the path to its buffer, must raise the documented
error or give the right result (the result of a copy taken before the first use); never another.
"""

from __future__ import annotations

import gc
import io
from types import SimpleNamespace

import optree
import pytest
import torch

import memfn
from memfn import DNC, SAM, SDNC
from memfn.sparse import _fast as sparse_fast
from memfn.sparse._fast import IndexCache, device_checksum, memory_checksum

I, H = 4, 8
SIZES = {
    SAM: {"nr_cells": 24, "cell_size": 4, "read_heads": 2, "sparse_reads": 3},
    SDNC: {"nr_cells": 24, "cell_size": 4, "read_heads": 2, "sparse_reads": 3, "temporal_reads": 2},
}
sparse_shells = pytest.mark.parametrize("cls", [SAM, SDNC], ids=lambda c: c.__name__)
CONSUMED = "was consumed by an earlier forward call"


def shell(cls, **kwargs):
    torch.manual_seed(1)
    return cls(I, H, **{**SIZES[cls], **kwargs})


def xs(seed: int, time: int = 5):
    return torch.randn(2, time, I, generator=torch.Generator().manual_seed(seed))


def with_memory(hidden, edit):
    chx, mhx, rv = hidden
    return chx, {**mhx, "memory": edit(mhx["memory"])}, rv


def _as_state(mhx: dict):
    """The pure core's NamedTuple of a shell's memory dict (what a user of the pure API passes)."""
    return (memfn.SDNCState if "link_matrix" in mhx else memfn.SAMState)(**mhx)


#: Ways to reach the buffer of a state already passed to (and consumed by) a fast-path call.
ALIASES = {
    "the state itself": lambda h: h,
    "memfn.detach": memfn.detach,
    ".data": lambda h: optree.tree_map(lambda t: t.data, h, none_is_leaf=True),
    "a view": lambda h: with_memory(h, lambda m: m[:]),
    "a reshaped view": lambda h: with_memory(h, lambda m: m.view(m.shape)),
    "a dict of its fields": lambda h: (h[0], dict(h[1].items()), h[2]),
    "the state NamedTuple": lambda h: (h[0], _as_state(h[1]), h[2]),
    "torch.Tensor.detach of the memory": lambda h: with_memory(h, torch.Tensor.detach),
}


@sparse_shells
@pytest.mark.parametrize("alias", list(ALIASES), ids=list(ALIASES))
def test_a_consumed_state_through_any_alias_raises(cls, alias):
    rnn = shell(cls)
    _, hidden = rnn(xs(0))
    kept = ALIASES[alias](hidden)  # made before the buffer is consumed
    first, _ = rnn(xs(1), memfn.detach(hidden))
    with pytest.raises(ValueError, match=CONSUMED):
        rnn(xs(1), kept)
    assert first.isfinite().all()


@sparse_shells
def test_the_issue_example_raises_instead_of_a_different_answer(cls):
    m = shell(cls)
    _, h = m(xs(0))
    a, _ = m(xs(1), memfn.detach(h))
    with pytest.raises(ValueError, match=CONSUMED):
        m(xs(1), memfn.detach(h))
    assert a.isfinite().all()


@sparse_shells
@pytest.mark.parametrize("path", ["fast=False", "debug=True", "torch.func.grad", "pure step"])
def test_a_stale_alias_is_refused_by_the_other_paths_too(cls, path):
    rnn = shell(cls)
    _, hidden = rnn(xs(0))
    kept = memfn.detach(hidden)
    rnn(xs(1), memfn.detach(hidden))  # consumes the buffer kept still points at
    with pytest.raises(ValueError, match=CONSUMED):
        if path == "fast=False":
            rnn.fast = False
            rnn(xs(1), kept)
        elif path == "debug=True":
            rnn.debug = True
            rnn(xs(1), kept)
        elif path == "torch.func.grad":
            params = dict(rnn.named_parameters())
            torch.func.grad(lambda p: torch.func.functional_call(rnn, p, (xs(1), kept))[0].sum())(params)
        else:
            rnn.pure_memory.step(_as_state(kept[1]), torch.zeros(2, rnn.pure_memory.interface_size))


@sparse_shells
def test_copies_taken_before_the_first_use_give_the_first_answer(cls):
    rnn = shell(cls)
    _, hidden = rnn(xs(0))
    cloned = memfn.clone(hidden)
    saved = io.BytesIO()
    torch.save(memfn.detach(hidden), saved)
    first, _ = rnn(xs(1), memfn.detach(hidden))
    again, _ = rnn(xs(1), cloned)
    saved.seek(0)
    loaded, _ = rnn(xs(1), torch.load(saved, weights_only=False))
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(loaded, first, rtol=0, atol=0)


@sparse_shells
def test_the_returned_state_carries_on_and_matches_the_pure_path(cls):
    fast, pure = shell(cls), shell(cls, fast=False)
    pure.load_state_dict(fast.state_dict())
    hf = hp = None
    for seed in range(3):  # the README's carry-on idiom, through detach each time
        out_f, hf = fast(xs(seed), None if hf is None else memfn.detach(hf))
        out_p, hp = pure(xs(seed), None if hp is None else memfn.detach(hp))
        torch.testing.assert_close(out_f, out_p)


@sparse_shells
def test_a_call_that_bypasses_memory_leaves_its_state_usable(cls):
    rnn = shell(cls)
    _, hidden = rnn(xs(0))
    kept = memfn.clone(hidden)
    _, after = rnn(xs(1), memfn.detach(hidden), pass_through_memory=False)
    expected, _ = rnn(xs(2), (memfn.clone(after[0]), kept[1], None))  # the memory as it was (read vectors: None)
    got, _ = rnn(xs(2), after)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_failed_call_leaves_its_buffer_unusable():
    rnn = shell(SAM)
    _, hidden = rnn(xs(0))
    kept = memfn.detach(hidden)
    params = rnn.step_params()
    rnn.step_params = lambda: {**params, "output.weight": params["output.weight"][:, :1]}
    with pytest.raises(ValueError, match="output.weight"):  # fails once the buffer is taken
        rnn(xs(1), memfn.detach(hidden))
    del rnn.step_params
    with pytest.raises(ValueError, match=CONSUMED):  # partly updated: no state may use it
        rnn(xs(1), kept)


# -- the faiss index cache ---------------------------------------------------------------------------


def faiss_pair(cls):
    pytest.importorskip("faiss")
    cached = shell(cls, nr_cells=200, knn="faiss", index="ivf")
    fresh = shell(cls, nr_cells=200, knn="faiss", index="ivf")
    fresh.load_state_dict(cached.state_dict())
    return cached, fresh


@sparse_shells
def test_the_index_cache_is_used_for_an_unchanged_buffer(cls, monkeypatch):
    monkeypatch.setattr(sparse_fast, "CHECKSUM_CHUNK", 40)  # 2.5 rows a chunk: rows straddle chunks
    cached, _ = faiss_pair(cls)
    _, hidden = cached(xs(0, 20))
    indexes = cached._indexes[0]
    # The checksum kept is the fresh memory's updated for the rows the call touched: a full pass agrees.
    assert cached._indexes._entries[0][2] == sparse_fast.memory_checksum(hidden[1]["memory"])
    _, hidden = cached(xs(1), memfn.detach(hidden))
    assert cached._indexes[0] is indexes
    assert cached._indexes._entries[0][2] == sparse_fast.memory_checksum(hidden[1]["memory"])


@sparse_shells
@pytest.mark.parametrize("edit", ["data", "numpy", "no_grad"])
def test_the_index_cache_is_not_used_after_an_edit_of_the_buffer(cls, edit):
    cached, fresh = faiss_pair(cls)
    _, hidden = cached(xs(0, 20))
    indexes = cached._indexes[0]
    memory = hidden[1]["memory"]
    rows = torch.randn(2, 50, memory.shape[-1], generator=torch.Generator().manual_seed(5))
    if edit == "data":
        memory.data[:, 100:150] = rows
    elif edit == "numpy":
        memory.numpy()[:, 100:150] = rows.numpy()
    else:
        with torch.no_grad():
            memory[:, 100:150] = rows
    copy = memfn.clone(hidden)  # another buffer: the fresh module builds its indexes from it
    got, _ = cached(xs(1), memfn.detach(hidden))
    assert cached._indexes[0] is not indexes
    expected, _ = fresh(xs(1), copy)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_index_cache_never_matches_a_new_tensor_on_a_freed_buffer():
    def engine(name):  # what put() reads from a finished engine
        return SimpleNamespace(indexes=[name], empty=False, tape=SimpleNamespace(records=[]))

    cache = IndexCache()
    size = (2, 4096, 16)  # large blocks come from mmap, so a new one often lands on the same address
    memory = torch.zeros(size)
    address = memory.data_ptr()
    cache.put(0, memory, engine("stale"))
    del memory
    gc.collect()
    other = torch.zeros(size)
    assert cache.take(0, other) is None, f"same address: {other.data_ptr() == address}"
    cache.put(0, other, engine("current"))
    assert cache.take(0, other) == ["current"]
    cache.put(0, other, engine("current"))
    assert cache.take(0, other[:, :10]) is None  # a view of part of it: another layout


@pytest.mark.parametrize("checksum", [memory_checksum, lambda t: device_checksum(t.reshape(-1).view(torch.uint8), 100)],
                         ids=["crc32", "device"])  # fmt: skip
def test_the_buffer_checksum_sees_any_edit(checksum):
    memory = torch.randn(2, 30, 4)
    before = checksum(memory)
    assert checksum(memory.clone()) == before

    def last_bit(m):  # the smallest edit: one float to the next one up
        m.data[1, 7, 2] = torch.nextafter(m[1, 7, 2], torch.tensor(float("inf")))

    def swap_rows(m):
        m.data[0, [3, 4]] = m.data[0, [4, 3]]

    for edit in (last_bit, swap_rows):
        edited = memory.clone()
        edit(edited)
        assert checksum(edited) != before


# -- autocast ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,fast", [(DNC, None), (SAM, True), (SAM, False), (SDNC, True), (SDNC, False)],
    ids=["DNC", "SAM-fast", "SAM-pure", "SDNC-fast", "SDNC-pure"],
)  # fmt: skip
def test_backward_under_cpu_autocast(cls, fast):
    sizes = SIZES.get(cls, {"nr_cells": 8, "cell_size": 4, "read_heads": 2})
    rnn = cls(I, H, **sizes, **({} if cls is DNC else {"fast": fast}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, hidden = rnn(xs(0))
        out2, _ = rnn(xs(1), memfn.detach(hidden))
    (out.float().square().sum() + out2.float().sum()).backward()
    assert out.dtype == torch.bfloat16 and hidden[1]["memory"].dtype == torch.float32  # the state stays float32
    for name, p in rnn.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.isfinite().all(), name


def test_the_link_operators_give_each_input_its_own_gradient_dtype():
    link = torch.rand(6, 6, requires_grad=True)
    precedence = torch.rand(6, requires_grad=True)
    w = torch.rand(6, dtype=torch.bfloat16, requires_grad=True)
    reads = torch.rand(2, 6, dtype=torch.bfloat16, requires_grad=True)
    new = memfn.link_matrix(link, precedence, w)
    f, b = memfn.forward_backward_read_weights(new, reads)
    assert new.dtype == torch.float32 and f.dtype == b.dtype == torch.float32
    (f.sum() + b.sum()).backward()
    assert (link.grad.dtype, precedence.grad.dtype, w.grad.dtype, reads.grad.dtype) == (
        torch.float32, torch.float32, torch.bfloat16, torch.bfloat16
    )  # fmt: skip
