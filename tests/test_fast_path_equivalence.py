"""The SAM/SDNC fast path against the pure step: the same positions at every step, the same bits.

Both paths run :func:`memfn.sparse._step.sparse_step`; they differ only in where rows live (a
functional store or one buffer updated in place). Rows are computed by the same function
(:func:`memfn.sparse.addressing.written_rows`), so the memories, reads and positions agree bit for
bit, from a zero memory (every score tied) onwards; gradients agree to float rounding (the
fast path's backward is its own).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import memfn
from memfn import SAM, SDNC

shells = pytest.mark.parametrize("cls", [SAM, SDNC], ids=["SAM", "SDNC"])
#: The 10-seed comparison the issue asks for; two seeds in the default run, the rest under -m slow.
SEEDS = [s if s < 2 else pytest.param(s, marks=pytest.mark.slow) for s in range(10)]


def pair(cls, seed, **kwargs):
    torch.manual_seed(seed)
    sizes = dict(nr_cells=32, cell_size=4, read_heads=2, sparse_reads=3)
    if cls is SDNC:
        sizes["temporal_reads"] = 2
    fast = cls(5, 10, **sizes, **kwargs)
    pure = cls(5, 10, **sizes, fast=False, **kwargs)
    pure.load_state_dict(fast.state_dict())
    return fast, pure


@shells
@pytest.mark.parametrize("seed", SEEDS)
def test_200_steps_from_a_zero_memory_pick_the_same_positions_and_write_the_same_bits(cls, seed):
    fast, pure = pair(cls, seed, debug=True)
    x = torch.randn(2, 200, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out_f, hid_f, dbg_f = fast(x)
        out_p, hid_p, dbg_p = pure(x)
    # Every step's read positions (and write weights, dense over the cells), exactly.
    assert (dbg_f["read_positions"] == dbg_p["read_positions"]).all()
    assert (dbg_f["write_weights"] == dbg_p["write_weights"]).all()
    assert torch.equal(out_f, out_p)
    for key in hid_p[1]:
        assert torch.equal(hid_f[1][key], hid_p[1][key]), key


@shells
def test_gradients_agree_to_rounding_in_float64(cls):
    fast, pure = pair(cls, 0)
    fast, pure = fast.double(), pure.double()
    x = torch.randn(3, 30, 5, dtype=torch.float64)
    fast(x)[0].square().sum().backward()
    pure(x)[0].square().sum().backward()
    for (name, pf), pp in zip(fast.named_parameters(), pure.parameters()):
        torch.testing.assert_close(pf.grad, pp.grad, rtol=1e-10, atol=1e-12, msg=name)


@shells
def test_debug_runs_on_the_fast_path_with_the_pure_records(cls):
    fast, pure = pair(cls, 1, debug=True)
    assert fast.uses_fast_path()
    x = torch.randn(3, 12, 5)
    out_f, _, dbg_f = fast(x)
    out_p, _, dbg_p = pure(x)
    assert list(dbg_f) == list(dbg_p) == list(cls.debug_keys)
    for key in dbg_p:
        assert (dbg_f[key] == dbg_p[key]).all(), key
    assert torch.equal(out_f, out_p)


@shells
@pytest.mark.parametrize("num_layers", [1, 2])
def test_packed_sequences_run_on_the_fast_path_with_the_pure_numbers(cls, num_layers):
    fast, pure = pair(cls, 2, num_layers=num_layers)
    x = torch.randn(3, 9, 5)
    packed = pack_padded_sequence(x, torch.tensor([9, 4, 6]), batch_first=True, enforce_sorted=False)
    out_f, hid_f = fast(packed)
    out_p, hid_p = pure(packed)
    torch.testing.assert_close(out_f.data, out_p.data, rtol=0, atol=0)
    for key in ("memory", "last_access", "time", "read_positions", "read_weights"):
        assert torch.equal(hid_f[1][key], hid_p[1][key]), key
    out_f.data.square().sum().backward()
    out_p.data.square().sum().backward()
    for (name, pf), pp in zip(fast.named_parameters(), pure.parameters()):
        torch.testing.assert_close(pf.grad, pp.grad, msg=name)


@shells
def test_packed_debug_on_the_fast_path_equals_the_pure_path(cls):
    fast, pure = pair(cls, 3, debug=True)
    packed = pack_padded_sequence(torch.randn(2, 6, 5), torch.tensor([3, 6]), batch_first=True, enforce_sorted=False)
    _, _, dbg_f = fast(packed)
    _, _, dbg_p = pure(packed)
    for key in dbg_p:
        assert (dbg_f[key] == dbg_p[key]).all(), key


def test_the_fast_path_still_consumes_its_input_state():
    fast, _ = pair(SAM, 0)
    _, hidden = fast(torch.randn(2, 3, 5))
    kept = memfn.clone(hidden)
    fast(torch.randn(2, 3, 5), hidden)
    with pytest.raises(ValueError, match="consumed"):
        fast(torch.randn(2, 3, 5), hidden)
    fast(torch.randn(2, 3, 5), kept)


@shells
def test_debug_without_passing_through_memory_equals_the_pure_path(cls):
    fast, pure = pair(cls, 4, debug=True)
    x = torch.randn(2, 4, 5)
    out_f, _, dbg_f = fast(x, pass_through_memory=False)
    out_p, _, dbg_p = pure(x, pass_through_memory=False)
    assert torch.equal(out_f, out_p)
    for key in dbg_p:
        assert (dbg_f[key] == dbg_p[key]).all(), key
