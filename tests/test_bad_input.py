# ruff: noqa: E501  (the tables of bad inputs read best one case per line)
"""Bad inputs, one by one: each gives an exception of the stated type (or exit status) whose message
names the offending argument, or (where the input is merely unusual) the right result.

The shells (constructor, forward, hidden state), the pure API (memories, cell, ``run``,
``batch_state``) and the task command lines (``tasks/*_task.py`` and ``tasks/infer.py``, run through
their in-process entry points).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import memfn
from memfn import DNC, SAM, SDNC
from memfn.tasks import infer
from memfn.tasks import train as train_module

I, H = 4, 8
SIZES = {
    DNC: {"nr_cells": 6, "cell_size": 3, "read_heads": 2},
    SAM: {"nr_cells": 12, "cell_size": 3, "read_heads": 2, "sparse_reads": 2},
    SDNC: {"nr_cells": 12, "cell_size": 3, "read_heads": 2, "sparse_reads": 2, "temporal_reads": 2},
}
SHELLS = [DNC, SAM, SDNC]
shells = pytest.mark.parametrize("cls", SHELLS, ids=lambda c: c.__name__)


def shell(cls, **kwargs):
    return cls(I, H, **{**SIZES[cls], **kwargs})


# -- shell constructors ----------------------------------------------------------------------------

CONSTRUCTOR_CASES = [
    ({"input_size": 0}, ValueError, "input_size"),
    ({"input_size": -3}, ValueError, "input_size"),
    ({"input_size": 2.5}, ValueError, "input_size"),
    ({"input_size": "4"}, ValueError, "input_size"),
    ({"input_size": True}, ValueError, "input_size"),
    ({"hidden_size": 0}, ValueError, "hidden_size"),
    ({"hidden_size": None}, ValueError, "hidden_size"),
    ({"rnn_type": "transformer"}, ValueError, "rnn_type"),
    ({"rnn_type": 3}, ValueError, "rnn_type"),
    ({"num_layers": 0}, ValueError, "num_layers"),
    ({"num_hidden_layers": 0}, ValueError, "num_hidden_layers"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"dropout": -0.1}, ValueError, "dropout"),
    ({"dropout": math.nan}, ValueError, "dropout"),
    ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity"),
    ({"clip": math.nan}, ValueError, "clip"),
    ({"clip": -1}, ValueError, "clip"),
    ({"clip": "20"}, ValueError, "clip"),
    ({"checkpoint_every": 0}, ValueError, "checkpoint_every"),
    ({"controller_init": "xavier"}, ValueError, "controller_init"),
    ({"output_size": 0}, ValueError, "output_size"),
    ({"gpu_id": "0"}, ValueError, "gpu_id"),
    ({"nr_cells": 0}, ValueError, "nr_cells"),
    ({"cell_size": 0}, ValueError, "cell_size"),
    ({"read_heads": 0}, ValueError, "read_heads"),
    ({"bidirectional": True}, NotImplementedError, "bidirectional"),
    ({"share_memory": True, "share_memory_between_layers": False}, ValueError, "share_memory"),
]


@shells
@pytest.mark.parametrize("kwargs,error,name", CONSTRUCTOR_CASES, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_bad_constructor_argument(cls, kwargs, error, name):
    args = {"input_size": I, "hidden_size": H, **SIZES[cls], **kwargs}
    with pytest.raises(error, match=name):
        cls(**args)


SPARSE_CONSTRUCTOR_CASES = [
    ({"sparse_reads": 0}, "sparse_reads"),
    ({"sparse_reads": 13}, "sparse_reads"),
    ({"knn": "annoy"}, "knn"),
    ({"index": "ivf"}, "index"),  # a faiss option with knn='exact'
    ({"num_lists": 4}, "num_lists"),
    ({"knn": "faiss", "index": "lsh"}, "index"),
    ({"knn": "faiss", "index": "ivf", "num_lists": 13}, "num_lists"),
    ({"knn": "faiss", "index": "ivf", "num_lists": 2, "index_checks": 3}, "index_checks"),
    ({"knn": "faiss", "index_checks": 0}, "index_checks"),
    ({"fast": "yes"}, "fast"),
]


@pytest.mark.parametrize("cls", [SAM, SDNC], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs,name", SPARSE_CONSTRUCTOR_CASES, ids=str)
def test_bad_sparse_constructor_argument(cls, kwargs, name):
    if kwargs.get("knn") == "faiss":
        pytest.importorskip("faiss")
    with pytest.raises(ValueError, match=name):
        shell(cls, **kwargs)


@pytest.mark.parametrize("temporal_reads", [0, -1, 13])
def test_bad_sdnc_temporal_reads(temporal_reads):
    with pytest.raises(ValueError, match="temporal_reads"):
        shell(SDNC, temporal_reads=temporal_reads)


# -- shell inputs ----------------------------------------------------------------------------------

x = torch.randn(2, 3, I)
INPUT_CASES = [
    ("a list", lambda: [[0.0] * I], TypeError, "input must be a torch.Tensor"),
    ("int64", lambda: x.long(), TypeError, "input must be a floating-point tensor, got dtype=torch.int64"),
    ("bool", lambda: x > 0, TypeError, "input must be a floating-point tensor"),
    ("2-D", lambda: x[0], ValueError, r"input must have shape \(batch, time, input_size\)"),
    ("4-D", lambda: x[None], ValueError, "input must have shape"),
    ("wrong width", lambda: torch.randn(2, 3, I + 1), ValueError, f"input_size={I}"),
    ("float64", lambda: x.double(), TypeError, r"input has dtype torch.float64 .* model.double\(\)"),
    ("float16", lambda: x.half(), TypeError, r"input has dtype torch.float16 .* model.half\(\)"),
    ("bfloat16", lambda: x.bfloat16(), TypeError, r"input has dtype torch.bfloat16 .* model.bfloat16\(\)"),
    ("meta", lambda: x.to("meta"), ValueError, r"input is on meta .* input.to\('cpu'\)"),
]


@shells
@pytest.mark.parametrize("what,make,error,match", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_bad_shell_input(cls, what, make, error, match):
    with pytest.raises(error, match=match):
        shell(cls)(make())


def _hidden(cls):
    rnn = shell(cls)
    _, hidden = rnn(x)
    return rnn, memfn.clone(memfn.detach(hidden))


HIDDEN_CASES = [
    ("hx a tensor", lambda h: torch.zeros(3), ValueError, "hx must be None or a tuple"),
    ("hx of 2", lambda h: h[:2], ValueError, "hx must be None or a tuple"),
    ("controller_hidden of 2 layers", lambda h: ([h[0][0], h[0][0]], h[1], h[2]), ValueError, "controller_hidden"),
    ("lstm state not a pair", lambda h: ([h[0][0][0]], h[1], h[2]), ValueError, r"controller_hidden\[0\]"),
    ("controller h wrong width", lambda h: ([(h[0][0][0][..., :1], h[0][0][1])], h[1], h[2]), ValueError,
     r"controller_hidden\[0\]\[0\] has shape"),
    ("read_vectors wrong width", lambda h: (h[0], h[1], h[2][:, :1]), ValueError, "read_vectors has shape"),
    ("read_vectors wrong batch", lambda h: (h[0], h[1], h[2][:1]), ValueError, "read_vectors has shape"),
    ("read_vectors not a tensor", lambda h: (h[0], h[1], [0.0]), TypeError, "read_vectors must be a tensor"),
    ("memory a list of two", lambda h: (h[0], [1, 2], h[2]), ValueError, r"one dict per memory, 1 memory"),
    ("memory a list of a number", lambda h: (h[0], [1], h[2]), TypeError, r"memory\[0\] must be a dict with keys"),
    ("memory a number", lambda h: (h[0], 1, h[2]), TypeError, r"memory must be a dict with keys"),
    ("memory dict missing keys", lambda h: (h[0], {"memory": h[1]["memory"]}, h[2]), ValueError,
     "memory is missing keys"),
    ("memory cells wrong", lambda h: (h[0], {**h[1], "memory": h[1]["memory"][:, :-1]}, h[2]), ValueError,
     r"memory\['memory'\] has shape"),
    ("memory a numpy array", lambda h: (h[0], {**h[1], "memory": h[1]["memory"].numpy()}, h[2]), TypeError,
     r"memory\['memory'\] must be a tensor"),
]  # fmt: skip


@shells
@pytest.mark.parametrize("what,edit,error,match", HIDDEN_CASES, ids=[c[0] for c in HIDDEN_CASES])
def test_bad_hidden_state(cls, what, edit, error, match):
    rnn, hidden = _hidden(cls)
    with pytest.raises(error, match=match):
        rnn(x, edit(hidden))


def test_another_memorys_state_is_refused():
    rnn = shell(DNC)
    _, hidden = shell(SAM)(x)
    with pytest.raises(ValueError, match=r"memory is missing keys \['link_matrix', 'precedence', 'usage_vector'\]"):
        rnn(x, (None, hidden[1], None))
    with pytest.raises(TypeError, match=r"memory must be a dict with keys \['memory', 'link_matrix'.*got a SAMState"):
        rnn(x, (None, memfn.SAMState(**hidden[1]), None))


@shells
def test_no_time_steps_give_an_empty_output_and_the_state_given(cls):
    rnn, hidden = _hidden(cls)
    kept = memfn.clone(hidden)
    out, after = rnn(x[:, :0], hidden)
    assert out.shape == (2, 0, I)
    for a, b in zip(torch.utils._pytree.tree_leaves(after), torch.utils._pytree.tree_leaves(kept)):
        assert torch.equal(a, b)
    out, _ = rnn(x[:, :0])  # and from no state at all
    assert out.shape == (2, 0, I)


@shells
def test_debug_with_no_time_steps_is_refused(cls):
    with pytest.raises(ValueError, match="input has no time steps .* debug=True"):
        shell(cls, debug=True)(x[:, :0])


@pytest.mark.parametrize("kwargs", [{}, {"knn": "faiss", "index": "ivf"}, {"knn": "faiss", "index": "flat"}], ids=str)
@pytest.mark.parametrize("cls", [SAM, SDNC], ids=lambda c: c.__name__)
def test_an_empty_batch_gives_an_empty_output(cls, kwargs):
    if kwargs:
        pytest.importorskip("faiss")
    rnn = shell(cls, **kwargs)
    out, hidden = rnn(x[:0])
    assert out.shape == (0, 3, I)
    out, _ = rnn(x[:0], hidden)
    out.sum().backward()
    assert out.shape == (0, 3, I)


# -- the pure API ----------------------------------------------------------------------------------

dnc16, dnc8, sam32 = memfn.dnc(16, 4, 2), memfn.dnc(8, 4, 2), memfn.sam(32, 4, 2, 4)
sdnc32 = memfn.sdnc(32, 4, 2, 4, 2)
XI = torch.zeros(dnc16.interface_size)


def _state(mem, **changes):
    return mem.init()._replace(**changes)


PURE_STEP_CASES = [
    ("other memory's size", lambda: dnc16.step(dnc8.init(), XI), ValueError, r"state.memory has shape \(8, 4\), expected \(16, 4\)"),
    ("usage [1]", lambda: dnc16.step(_state(dnc16, usage_vector=torch.zeros(1)), XI), ValueError, "state.usage_vector has shape"),
    ("precedence [1, 1]", lambda: dnc16.step(_state(dnc16, precedence=torch.zeros(1, 1)), XI), ValueError, "state.precedence has shape"),
    ("link [16, 16]", lambda: dnc16.step(_state(dnc16, link_matrix=torch.zeros(16, 16)), XI), ValueError, "state.link_matrix has shape"),
    ("read weights of 3 heads", lambda: dnc16.step(_state(dnc16, read_weights=torch.zeros(3, 16)), XI), ValueError, "state.read_weights"),
    ("cell width 5", lambda: dnc16.step(_state(dnc16, memory=torch.zeros(16, 5)), XI), ValueError, "state.memory has shape"),
    ("SAM state to dnc", lambda: dnc16.step(sam32.init(), XI), TypeError, "state must be a DNCState"),
    ("a tuple", lambda: dnc16.step(tuple(dnc16.init()), XI), TypeError, "state must be a DNCState"),
    ("a leaf not a tensor", lambda: dnc16.step(_state(dnc16, memory=0.0), XI), TypeError, "state.memory must be a tensor"),
    ("int memory", lambda: dnc16.step(_state(dnc16, memory=torch.zeros(16, 4, dtype=torch.long)), XI), TypeError, "state.memory must have a floating dtype"),
    ("mixed float dtypes", lambda: dnc16.step(_state(dnc16, usage_vector=torch.zeros(16, dtype=torch.float64)), XI), TypeError, "state.usage_vector has dtype torch.float64"),
    ("state float64, xi float32", lambda: dnc16.step(dnc16.init(torch.float64), XI), TypeError, "xi has dtype torch.float32"),
    ("xi on meta", lambda: dnc16.step(dnc16.init(), XI.to("meta")), ValueError, "xi is on meta"),
    ("xi too short", lambda: dnc16.step(dnc16.init(), XI[:-1]), ValueError, "xi must have length interface_size"),
    ("xi int", lambda: dnc16.step(dnc16.init(), XI.long()), ValueError, "xi must have a floating dtype"),
    ("batch axes differ", lambda: dnc16.step(memfn.batch_state(dnc16.init(), 3)._replace(usage_vector=torch.zeros(1, 16)), XI), ValueError, r"state.usage_vector has shape \(1, 16\), expected \(3, 16\)"),
    ("SAM float positions", lambda: sam32.step(_state(sam32, read_positions=torch.zeros(2, 4)), XI[: sam32.interface_size]), TypeError, "state.read_positions must have dtype torch.int64"),
    ("SAM float time", lambda: sam32.step(_state(sam32, time=torch.zeros(())), XI[: sam32.interface_size]), TypeError, "state.time must have dtype torch.int64"),
    ("SAM last_access short", lambda: sam32.step(_state(sam32, last_access=torch.zeros(31, dtype=torch.long)), XI[: sam32.interface_size]), ValueError, "state.last_access has shape"),
    ("SAM 3 read slots", lambda: sam32.step(_state(sam32, read_positions=torch.zeros(2, 3, dtype=torch.long)), XI[: sam32.interface_size]), ValueError, "state.read_positions has shape"),
    ("DNC state to sam", lambda: sam32.step(dnc16.init(), XI[: sam32.interface_size]), TypeError, "state must be a SAMState"),
    ("SDNC state to sam", lambda: sam32.step(sdnc32.init(), XI[: sam32.interface_size]), TypeError, "state must be a SAMState"),
    ("SAM state to sdnc", lambda: sdnc32.step(sam32.init(), torch.zeros(sdnc32.interface_size)), TypeError, "state must be a SDNCState"),
    ("SDNC links short", lambda: sdnc32.step(_state(sdnc32, link_matrix=torch.zeros(32, 1)), torch.zeros(sdnc32.interface_size)), ValueError, "state.link_matrix has shape"),
    ("SDNC precedence positions float", lambda: sdnc32.step(_state(sdnc32, precedence_positions=torch.zeros(2)), torch.zeros(sdnc32.interface_size)), TypeError, "state.precedence_positions must have dtype"),
    ("batch_state -1", lambda: memfn.batch_state(dnc16.init(), -1), ValueError, "batch_size"),
    ("batch_state 2.5", lambda: memfn.batch_state(dnc16.init(), 2.5), ValueError, "batch_size"),
    ("batch_state '3'", lambda: memfn.batch_state(dnc16.init(), "3"), ValueError, "batch_size"),
    ("dnc nr_cells 0", lambda: memfn.dnc(0, 4, 2), ValueError, "nr_cells"),
    ("dnc cell_size -1", lambda: memfn.dnc(4, -1, 2), ValueError, "cell_size"),
    ("dnc read_heads 0", lambda: memfn.dnc(4, 4, 0), ValueError, "read_heads"),
    ("sam sparse_reads > N", lambda: memfn.sam(4, 4, 1, sparse_reads=5), ValueError, "sparse_reads"),
    ("sdnc temporal_reads 0", lambda: memfn.sdnc(8, 4, 1, 2, temporal_reads=0), ValueError, "temporal_reads"),
    ("lstm num_layers 0", lambda: memfn.lstm(4, 4, num_layers=0), ValueError, "num_layers"),
    ("controller kind", lambda: memfn.controller("tcn", 4, 4), ValueError, "rnn_type|kind"),
]  # fmt: skip


@pytest.mark.parametrize("what,call,error,match", PURE_STEP_CASES, ids=[c[0] for c in PURE_STEP_CASES])
def test_bad_pure_api_input(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


def _cell(mem=dnc16):
    return memfn.memory_cell(memfn.lstm(5 + mem.read_size, H), mem, 5, 5)


CELL = _cell()
PARAMS, STATE = CELL.init_params(), CELL.init_state()
BATCHED = memfn.batch_state(STATE, 3)
STEP = memfn.batched_step(CELL)

CELL_CASES = [
    ("params missing a weight", lambda: CELL.step({k: v for k, v in PARAMS.items() if k != "output.bias"}, STATE, torch.zeros(5)), ValueError, "params lacks 'output.bias'"),
    ("param of another size", lambda: CELL.step({**PARAMS, "output.weight": torch.zeros(5, 3)}, STATE, torch.zeros(5)), ValueError, r"params\['output.weight'\] has shape"),
    ("params float64, state float32", lambda: CELL.step({k: v.double() for k, v in PARAMS.items()}, STATE, torch.zeros(5)), TypeError, r"params\[.*\] has dtype torch.float64"),
    ("params a list", lambda: CELL.step(list(PARAMS.values()), STATE, torch.zeros(5)), TypeError, "params must be a dict"),
    ("state a memory state", lambda: CELL.step(PARAMS, STATE.memory, torch.zeros(5)), TypeError, "state must be a CellState"),
    ("controller state of another width", lambda: CELL.step(PARAMS, STATE._replace(controller=memfn.lstm(4, 3).init_state()), torch.zeros(5)), ValueError, "state.controller.h has shape"),
    ("GRU state to an LSTM cell", lambda: CELL.step(PARAMS, STATE._replace(controller=memfn.gru(4, H).init_state()), torch.zeros(5)), TypeError, "state.controller must be a LSTMState"),
    ("memory of another size in the cell", lambda: CELL.step(PARAMS, STATE._replace(memory=dnc8.init()), torch.zeros(5)), ValueError, "state.memory.memory has shape"),
    ("read_vectors of another size", lambda: CELL.step(PARAMS, STATE._replace(read_vectors=torch.zeros(3)), torch.zeros(5)), ValueError, "state.read_vectors has shape"),
    ("float64 memory in a float32 cell state", lambda: CELL.step(PARAMS, STATE._replace(memory=dnc16.init(torch.float64)), torch.zeros(5)), TypeError, "state.memory has dtype torch.float64"),
    ("run: 2-D inputs", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(3, 5)), ValueError, r"inputs must have shape \[T, B, input_size=5\]"),
    ("run: wrong input width", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(2, 3, 4)), ValueError, "inputs must have shape"),
    ("run: int inputs", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(2, 3, 5, dtype=torch.long)), TypeError, "inputs must have a floating dtype"),
    ("run: inputs a list", lambda: memfn.run(STEP, PARAMS, BATCHED, [[0.0]]), TypeError, "inputs must be a tensor"),
    ("run: batch 4 vs state batch 3", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(2, 4, 5)), ValueError, r"has shape \(3, .*expected \(4, "),
    ("run: unbatched state", lambda: memfn.run(STEP, PARAMS, STATE, torch.zeros(2, 3, 5)), ValueError, "state.read_vectors has shape"),
    ("run: lengths of 2", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(2, 3, 5), torch.tensor([1, 2])), ValueError, "lengths must be a tensor"),
    ("run: checkpoint_every 0", lambda: memfn.run(STEP, PARAMS, BATCHED, torch.zeros(2, 3, 5), None, -1), ValueError, "checkpoint_every"),
    ("run: no steps, foreign step", lambda: memfn.run(lambda p, s, x: (x, s), PARAMS, BATCHED, torch.zeros(0, 3, 5)), ValueError, "inputs has no time steps"),
    ("memory_cell: clip nan", lambda: memfn.memory_cell(memfn.lstm(5 + 8, H), dnc16, 5, clip=math.nan), ValueError, "clip"),
    ("memory_cell: clip -1", lambda: memfn.memory_cell(memfn.lstm(5 + 8, H), dnc16, 5, clip=-1.0), ValueError, "clip"),
    ("memory_cell: input_size 0", lambda: memfn.memory_cell(memfn.lstm(5 + 8, H), dnc16, 0), ValueError, "input_size"),
    ("memory_cell: controller too narrow", lambda: memfn.memory_cell(memfn.lstm(5, H), dnc16, 5), ValueError, "controller.input_size"),
]  # fmt: skip


@pytest.mark.parametrize("what,call,error,match", CELL_CASES, ids=[c[0] for c in CELL_CASES])
def test_bad_cell_or_run_input(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_run_with_no_steps_gives_empty_outputs_and_the_state():
    ys, final = memfn.run(STEP, PARAMS, BATCHED, torch.zeros(0, 3, 5))
    assert ys.shape == (0, 3, 5) and final is BATCHED


FIELD_SHAPES = {f: tuple(t.shape) for f, t in zip(memfn.DNCState._fields, dnc16.init())}


@given(
    field=st.sampled_from(memfn.DNCState._fields),
    shape=st.lists(st.integers(0, 17), min_size=0, max_size=3).map(tuple),
)
def test_any_wrongly_shaped_leaf_is_named(field, shape):
    if shape == FIELD_SHAPES[field]:
        return
    state = dnc16.init()._replace(**{field: torch.zeros(shape)})
    # A shape with extra leading axes is a batch for the first leaf, a mismatch for the others.
    with pytest.raises(ValueError, match=r"state\.\w+ has shape"):
        dnc16.step(state, XI)


@given(dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool]),
       field=st.sampled_from(memfn.DNCState._fields[1:]))  # fmt: skip
def test_any_leaf_of_another_dtype_is_named(dtype, field):
    state = dnc16.init()._replace(**{field: torch.zeros(FIELD_SHAPES[field], dtype=dtype)})
    with pytest.raises(TypeError, match=rf"state\.{field}"):
        dnc16.step(state, XI)


def test_checks_stay_out_of_the_compiled_step():
    # A compiled run: the check runs at run()'s boundary, never in the graph, so another length and
    # a carried state do not recompile.
    if not hasattr(torch.compiler, "set_stance"):
        pytest.skip("torch.compiler.set_stance needs torch >= 2.6")
    step = memfn.batched_step(CELL, compile=True, fullgraph=True)
    _, state = memfn.run(step, PARAMS, BATCHED, torch.randn(2, 3, 5))
    with torch.compiler.set_stance("fail_on_recompile"):
        memfn.run(step, PARAMS, memfn.detach(state), torch.randn(5, 3, 5))
        with pytest.raises(ValueError, match="state.memory.memory has shape"):
            memfn.run(step, PARAMS, state._replace(memory=memfn.batch_state(dnc8.init(), 3)), torch.randn(2, 3, 5))


# -- the task command lines ------------------------------------------------------------------------

SMALL = "-nhid 8 -mem_slot 4 -mem_size 3 -read_heads 1 -batch_size 2 -summarize_freq 1 --quiet --plot-dir".split() + [
    ""
]


def train_error(capsys, argv, task="copy", status=2) -> str:
    assert train_module.main(task, argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{task}_task.py: error: "), err
    return err[0]


CLI_CASES = [
    (["-clip", "-1"], "-clip must be a finite number > 0, got -1.0"),
    (["-clip", "0"], "-clip must be a finite number > 0, got 0.0"),
    (["-clip", "nan"], "-clip must be a finite number > 0, got nan"),
    (["-clip", "inf"], "-clip must be a finite number > 0, got inf"),
    (["-clip", "x"], "argument -clip/--clip: invalid float value: 'x'"),
    (["-lr", "inf"], "-lr must be a finite number > 0, got inf"),
    (["-lr", "nan"], "-lr must be a finite number > 0, got nan"),
    (["-lr", "0"], "-lr must be a finite number > 0, got 0.0"),
    (["-lr", "-0.1"], "-lr must be a finite number > 0"),
    (["-dropout", "1"], "-dropout must be in [0, 1), got 1.0"),
    (["-dropout", "nan"], "-dropout must be in [0, 1), got nan"),
    (["-dropout", "-0.5"], "-dropout must be in [0, 1)"),
    (["-input_size", "1"], "-input_size must be >= 2 for the copy task"),
    (["-input_size", "0"], "-input_size must be >= 1, got 0"),
    (["-nhid", "0"], "-nhid must be >= 1, got 0"),
    (["-nlayer", "0"], "-nlayer must be >= 1"),
    (["-nhlayer", "-2"], "-nhlayer must be >= 1"),
    (["-batch_size", "0"], "-batch_size must be >= 1"),
    (["-mem_size", "0"], "-mem_size must be >= 1"),
    (["-mem_slot", "0"], "-mem_slot must be >= 1"),
    (["-read_heads", "0"], "-read_heads must be >= 1"),
    (["-sequence_max_length", "0"], "-sequence_max_length must be >= 1"),
    (["-summarize_freq", "0"], "-summarize_freq must be >= 1"),
    (["-check_freq", "0"], "-check_freq must be >= 1"),
    (["-curriculum_freq", "0"], "-curriculum_freq must be >= 1"),
    (["-iterations", "-1"], "-iterations and -curriculum_increment must be >= 0"),
    (["-curriculum_increment", "-1"], "-iterations and -curriculum_increment must be >= 0"),
    (["--stop-at", "nan"], "--stop-at must be a finite number, got nan"),
    (["--eval-lengths", "3", "0"], "--eval-lengths must all be >= 1"),
    (["-memory_type", "ntm"], "argument -memory_type/--memory_type: invalid choice: 'ntm'"),
    (["-optim", "lbfgs"], "argument -optim/--optim: invalid choice"),
    (["-rnn_type", "tcn"], "argument -rnn_type/--rnn_type: invalid choice"),
    (["--knn", "annoy"], "argument -knn/--knn: invalid choice"),
    (["-mem_slot", "x"], "argument -mem_slot/--mem_slot: invalid int value: 'x'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["-memory_type", "sam", "-sparse_reads", "5"], "-sparse_reads must be <= -mem_slot (4), got 5"),
    (["-memory_type", "sdnc", "-sparse_reads", "2", "-temporal_reads", "5"], "-temporal_reads must be <= -mem_slot"),
    (["--resume"], "--resume without a path resumes from --checkpoint-dir, which was not given"),
    (["--resume", "/nonexistent/ckpt"], "--resume: no checkpoint at /nonexistent/ckpt"),
    (["-mem_slot", "1000000"], "the model does not fit in memory: a dense DNC memory of 1,000,000 cells"),
]


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_bad_task_command_line(argv, message, capsys):
    line = train_error(capsys, [*SMALL, "-iterations", "1", *argv])
    assert message in line


@pytest.mark.parametrize("task", ["adding", "argmax"])
def test_input_size_1_is_refused_for_every_task(task, capsys):
    assert "-input_size must be >= 2" in train_error(capsys, [*SMALL, "-input_size", "1"], task)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint directory written by the copy task's own main (2 iterations)."""
    directory = tmp_path_factory.mktemp("trained")
    assert train_module.main("copy", [*SMALL, "-iterations", "2", "--checkpoint-dir", str(directory)]) == 0
    return directory


@pytest.fixture
def ckdir(trained, tmp_path) -> Path:
    directory = tmp_path / "ck"
    directory.mkdir()
    (directory / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    return directory


class WritesMarker:
    """Unpickling this runs ``os.system`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _edited(ckdir: Path, edit, name: str = "edited") -> Path:
    ckpt = torch.load(ckdir / "checkpoint.pt", weights_only=True)
    edit(ckpt)
    path = ckdir / f"{name}.pt"
    torch.save(ckpt, path)
    return path


def test_a_crafted_checkpoint_runs_no_code_through_resume_or_infer(ckdir, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = _edited(ckdir, lambda c: c["config"].update(evil=WritesMarker(marker)))
    line = train_error(capsys, [*SMALL, "-iterations", "3", "--resume", str(path)])
    assert "refused: it holds Python objects (posix.system)" in line and "--resume" in line
    assert infer.main([str(path), "--no-compile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint:" in err[0] and "refused" in err[0]
    assert not marker.exists()


RESUME_CASES = [
    ("config as an object", lambda c: c.update(config=__import__("argparse").Namespace(**c["config"])), "refused: it holds Python objects (argparse.Namespace)"),
    ("no optimizer state", lambda c: c.pop("optimizer"), "cannot be resumed: it lacks optimizer"),
    ("no iteration", lambda c: c.pop("iteration"), "cannot be resumed: it lacks iteration"),
    ("a weight of another shape", lambda c: c["model"].update({"output.bias": torch.zeros(7)}), "holds weights that do not fit this model (output.bias has shape (7,)"),
    ("a missing weight", lambda c: c["model"].pop("output.bias"), "holds weights that do not fit this model (1 missing"),
    ("a weight of another dtype", lambda c: c["model"].update({"output.bias": c["model"]["output.bias"].double()}), "output.bias has dtype torch.float64"),
    ("model not a dict", lambda c: c.update(model=[1]), "expected a state dict of tensors"),
    ("damaged random state", lambda c: c["rng"].update(torch=torch.zeros(3)), "has a damaged random state"),
    ("optimizer state of another model", lambda c: c["optimizer"]["param_groups"][0].update(params=[0]), "has an optimizer state that does not fit"),
    ("other options", lambda c: c["config"].update(nhid=16), "is incompatible with these options (nhid: checkpoint 16 vs now 8)"),
]  # fmt: skip


@pytest.mark.parametrize("what,edit,message", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_bad_checkpoint_to_resume(what, edit, message, ckdir, capsys):
    path = _edited(ckdir, edit)
    line = train_error(capsys, [*SMALL, "-iterations", "3", "--resume", str(path)])
    assert message in line and "--resume" in line


def test_an_existing_checkpoint_is_not_overwritten_without_resume(ckdir, capsys):
    before = (ckdir / "checkpoint.pt").read_bytes()
    line = train_error(capsys, [*SMALL, "-iterations", "3", "--checkpoint-dir", str(ckdir)])
    assert "--checkpoint-dir" in line and "pass --resume to continue it or --overwrite" in line
    assert (ckdir / "checkpoint.pt").read_bytes() == before
    # --overwrite starts afresh; a bare --resume continues from --checkpoint-dir.
    assert train_module.main("copy", [*SMALL, "-iterations", "1", "--checkpoint-dir", str(ckdir), "--overwrite"]) == 0
    assert torch.load(ckdir / "checkpoint.pt", weights_only=True)["iteration"] == 1
    assert train_module.main("copy", [*SMALL, "-iterations", "2", "--checkpoint-dir", str(ckdir), "--resume"]) == 0
    assert "resumed from iteration 1" in capsys.readouterr().out
    assert torch.load(ckdir / "checkpoint.pt", weights_only=True)["iteration"] == 2


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--plot-dir"])
def test_an_output_folder_that_is_a_file_is_refused(option, tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("")
    argv = [a for a in SMALL if a not in ("--plot-dir", "")] + ["-iterations", "1", option, str(path)]
    assert f"{option}: {path} is a file, not a folder" in train_error(capsys, argv)


def test_an_output_folder_that_cannot_be_made_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    line = train_error(capsys, [*SMALL, "-iterations", "1", "--checkpoint-dir", str(tmp_path / "f" / "sub")])
    assert "--checkpoint-dir: cannot create" in line


def test_a_nan_loss_stops_keeps_the_last_checkpoint_and_exits_1(tmp_path, capsys, monkeypatch):
    task = train_module.TASKS["copy"]
    real = task.loss
    calls = []

    def loss(self, output, batch):
        calls.extend([1] if torch.is_grad_enabled() else [])  # training steps, not evaluations
        value = real(self, output, batch)
        return value * math.nan if len(calls) >= 3 else value

    monkeypatch.setattr(task, "loss", loss)
    argv = [*SMALL, "-iterations", "5", "-check_freq", "1", "--checkpoint-dir", str(tmp_path)]
    line = train_error(capsys, argv, status=1)
    assert "the loss became nan at iteration 3; the checkpoint of iteration 2 is kept" in line
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 2


def test_an_allocation_failure_inside_torch_is_one_line(capsys, monkeypatch):
    def refuse(*args, **kwargs):  # what the CPU allocator raises where memfn cannot size the memory first
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(train_module, "build_optimizer", refuse)
    line = train_error(capsys, [*SMALL, "-iterations", "1"])
    assert "the model does not fit in memory: [enforce fail" in line


class _OverflowingGradient(torch.autograd.Function):
    """The identity, whose gradient is infinite: a finite loss with gradients that overflowed."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


def test_overflowing_gradients_stop_before_the_step(tmp_path, capsys, monkeypatch):
    task = train_module.TASKS["copy"]
    real = task.loss
    calls = []

    def loss(self, output, batch):  # the 2nd training step's gradient overflows
        calls.extend([1] if torch.is_grad_enabled() else [])
        value = real(self, output, batch)
        return _OverflowingGradient.apply(value) if len(calls) == 2 and torch.is_grad_enabled() else value

    monkeypatch.setattr(task, "loss", loss)
    argv = [*SMALL, "-iterations", "4", "-check_freq", "1", "--checkpoint-dir", str(tmp_path)]
    line = train_error(capsys, argv, status=1)
    assert "the gradient norm became" in line and "at iteration 2; the checkpoint of iteration 1 is kept" in line
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 1 and all(v.isfinite().all() for v in ckpt["model"].values())


def test_a_failed_save_removes_its_temporary_file(tmp_path, capsys, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module.torch, "save", full_disk)
    line = train_error(capsys, [*SMALL, "-iterations", "1", "--checkpoint-dir", str(tmp_path)])
    assert "--checkpoint-dir: cannot write" in line and "No space left on device" in line
    assert list(tmp_path.iterdir()) == []


def test_a_torch_write_failure_is_one_line_too(tmp_path, capsys, monkeypatch):
    def enforce_fail(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(train_module.torch, "save", enforce_fail)
    line = train_error(capsys, [*SMALL, "-iterations", "1", "--checkpoint-dir", str(tmp_path)])
    assert "--checkpoint-dir: cannot write" in line and "unexpected pos" in line
    assert list(tmp_path.iterdir()) == []


def test_a_stale_temporary_file_of_a_killed_save_is_removed(ckdir):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ckdir / f"checkpoint.pt.tmp{int(dead.stdout)}"
    stale.write_bytes(b"half a checkpoint")
    assert train_module.main("copy", [*SMALL, "-iterations", "3", "--checkpoint-dir", str(ckdir), "--resume"]) == 0
    assert not stale.exists()


def test_a_full_disk_in_a_real_process_is_one_line_and_leaves_no_temporary_file(tmp_path):
    import resource
    import signal
    import subprocess
    import sys

    def small_files():  # writes past 64 KiB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "tasks" / "copy_task.py"), *SMALL, "-nhid", "64", "-iterations", "1",
         "--checkpoint-dir", str(tmp_path)],
        capture_output=True, text=True, preexec_fn=small_files, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint-dir: cannot write" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


# -- tasks/infer.py --------------------------------------------------------------------------------


def infer_error(capsys, argv) -> str:
    assert infer.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("infer.py: error: "), err
    return err[0]


INFER_CASES = [
    (["{ck}", "--batches", "0"], "--batches must be >= 1, got 0"),
    (["{ck}", "--batch-size", "-1"], "--batch-size must be >= 1, got -1"),
    (["{ck}", "--length", "0"], "--length must be >= 1, got 0"),
    (["{ck}", "--cuda", "x"], "argument --cuda: invalid int value"),
    (["{ck}", "--export", "{file}/x.pt2"], "--export: cannot write"),
    (["{ck}", "--save-outputs", "{file}/y.pt"], "--save-outputs: cannot write"),
    (["{ck}", "--inputs", "{missing}"], "--inputs: no file at"),
    (["{ck}", "--inputs", "{file}"], "--inputs: "),
    (["{missing}"], "checkpoint: no checkpoint at"),
    (["{file}"], "checkpoint: "),
    (["{namespace}"], "refused: it holds Python objects (argparse.Namespace)"),
    (["{no_model}"], "is not a memfn task checkpoint"),
    (["{bad_nhid}"], "has unusable options"),
    ([], "the following arguments are required: checkpoint"),
]


@pytest.mark.parametrize("argv,message", INFER_CASES, ids=[" ".join(c[0]) for c in INFER_CASES])
def test_bad_infer_command_line(argv, message, ckdir, tmp_path, capsys):
    file = tmp_path / "plain_file"
    file.write_text("not a tensor")
    files = {
        "ck": ckdir / "checkpoint.pt",
        "file": file,
        "missing": tmp_path / "missing.pt",
        "namespace": _edited(ckdir, lambda c: c.update(config=__import__("argparse").Namespace(**c["config"])), "ns"),
        "no_model": _edited(ckdir, lambda c: c.pop("model"), "no_model"),
        "bad_nhid": _edited(ckdir, lambda c: c["config"].update(nhid=-4), "bad_nhid"),
    }
    line = infer_error(capsys, [a.format(**files) for a in argv])
    assert message in line
