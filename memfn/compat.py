"""pytorch-dnc's structures and spellings: the one module that knows them.

The shells speak the hidden-state layout of one of the two pytorch-dnc releases (package ``dnc``):

- **1.1.0** (PyPI, the seed documentation's API; ``gpu_id=``): the memory state is a ``dict`` when
  ``share_memory=True`` and a list of one ``dict`` per layer otherwise; with
  ``pass_through_memory=False`` the returned read vectors are ``None``.
- **2.0** (GitHub; ``device=``): the memory state is always a list with one ``dict`` per memory
  (``mhx[0]["memory"]``); with ``pass_through_memory=False`` the read vectors are zeros.

The rule (:func:`dnc_api`): a shell built with a 2.0-only spelling (``device=`` or
``share_memory_between_layers=``, whatever their value) speaks 2.0, otherwise 1.1.0; ``api=``
chooses explicitly. Every shell accepts both layouts on input, plain ``dict``/``OrderedDict``s
rebuilt by the caller, memfn's state NamedTuples, and ``None`` for any part (zeros).

The dictionaries are plain ``dict``s of tensors (keys in the order of the pure state's fields,
which for the DNC is ``dnc``'s order), so everything done with a dict works on them: ``items``,
``get``, ``in``, ``json``-able shapes, ``torch.save``/``torch.load(weights_only=True)``,
``optree``/``torch.utils._pytree``. The pure core keeps its NamedTuples; converting is free
(no tensor is copied).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from memfn._validation import one_of
from memfn.cell import CellState
from memfn.controllers import LSTMState, RNNState

#: The pytorch-dnc releases whose hidden-state layout a shell can speak.
API_VERSIONS = ("1.1", "2.0")

#: A checker of one state leaf: ``(name, given, expected_zero) -> tensor to use``.
LeafCheck = Callable[[str, Any, Tensor], Tensor]
StateT = TypeVar("StateT", bound=NamedTuple)  # a memory state NamedTuple


class _NotGiven:
    """The default of options whose *spelling* matters (``device=None`` still means "2.0 spoken")."""

    def __repr__(self) -> str:
        return "<not given>"


#: The default of the shells' ``device``, ``share_memory`` and ``share_memory_between_layers``:
#: "not passed", which differs from any value passed (``device=None`` still selects release 2.0).
NOT_GIVEN: Any = _NotGiven()


def dnc_api(api: str | None, device: Any, share_memory_between_layers: Any) -> str:
    """The pytorch-dnc API a shell speaks: ``api`` if given, else ``"2.0"`` when a 2.0-only
    spelling (``device``, ``share_memory_between_layers``) was passed, else ``"1.1"``.

    Examples:
        >>> from memfn.compat import NOT_GIVEN, dnc_api
        >>> dnc_api(None, NOT_GIVEN, NOT_GIVEN), dnc_api(None, None, NOT_GIVEN), dnc_api("2.0", NOT_GIVEN, NOT_GIVEN)
        ('1.1', '2.0', '2.0')
    """
    if api is not None:
        return one_of("api", api, API_VERSIONS)
    spoken_2 = device is not NOT_GIVEN or share_memory_between_layers is not NOT_GIVEN
    return "2.0" if spoken_2 else "1.1"


def shared_memory(share_memory: Any, share_memory_between_layers: Any) -> bool:
    """``share_memory`` (1.1.0) and ``share_memory_between_layers`` (2.0) are one option; True if neither.

    Examples:
        >>> from memfn.compat import NOT_GIVEN, shared_memory
        >>> shared_memory(NOT_GIVEN, NOT_GIVEN), shared_memory(NOT_GIVEN, False)
        (True, False)
    """
    given = [v for v in (share_memory, share_memory_between_layers) if v is not NOT_GIVEN]
    if len(given) == 2 and bool(given[0]) != bool(given[1]):
        raise ValueError(
            f"share_memory={share_memory} and share_memory_between_layers={share_memory_between_layers} "
            "disagree; they are two spellings of one option"
        )
    return bool(given[0]) if given else True


_warned_devices: set[str] = set()


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside memfn (the user's line)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def resolve_device(gpu_id: int = -1, device: torch.device | str | None = None) -> torch.device:
    """The device from pytorch-dnc's ``gpu_id`` (1.1.0) or ``device`` (2.0); CPU, with a warning, if
    CUDA was asked for on a machine without it (so published examples run anywhere).

    Examples:
        >>> memfn.compat.resolve_device(-1), memfn.compat.resolve_device(device="cpu")
        (device(type='cpu'), device(type='cpu'))
    """
    if isinstance(gpu_id, bool) or not isinstance(gpu_id, int):
        raise ValueError(f"gpu_id must be an integer (-1 for CPU), got {gpu_id!r}")
    from_gpu_id = torch.device("cpu") if gpu_id < 0 else torch.device("cuda", gpu_id)
    if device is None or device is NOT_GIVEN:
        wanted = from_gpu_id
    else:
        wanted = torch.device(device)
        if gpu_id >= 0 and (wanted.type != "cuda" or (wanted.index or 0) != gpu_id):
            raise ValueError(f"gpu_id={gpu_id} and device={str(device)!r} disagree; give one of them")
    if wanted.type == "cuda" and not torch.cuda.is_available():
        if str(wanted) not in _warned_devices:
            _warned_devices.add(str(wanted))
            warnings.warn(
                f"{wanted} was requested but CUDA is not available; running on CPU instead", stacklevel=_caller_level()
            )
        return torch.device("cpu")
    return wanted


def describe(value: Any) -> str:
    """A short description of a received value, for error messages.

    Examples:
        >>> memfn.compat.describe(torch.zeros(2, 3)), memfn.compat.describe([1, 2])
        ('a tensor of shape (2, 3)', 'a list of length 2')
    """
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


# -- memfn state -> pytorch-dnc hidden state ------------------------------------------------------


def memory_dict(state: NamedTuple) -> dict[str, Tensor]:
    """One memory's state as ``dnc``'s plain dict (same tensors, keys in field order).

    Examples:
        >>> state = memfn.dnc(nr_cells=4, cell_size=2, read_heads=1).init()
        >>> list(memfn.compat.memory_dict(state))
        ['memory', 'link_matrix', 'precedence', 'read_weights', 'write_weights', 'usage_vector']
    """
    return dict(zip(state._fields, state))


def dnc_hidden(
    state: CellState, *, api: str, share_memory: bool, pass_through_memory: bool = True
) -> tuple[list[tuple[Tensor, Tensor] | Tensor], Any, Tensor | None]:
    """``(controller_hidden, memory, read_vectors)`` in the layout of pytorch-dnc ``api``.

    ``controller_hidden``: one entry per layer, ``(h, c)`` for LSTMs, each ``(num_hidden_layers, B, H)``
    (the pure core keeps the batch axis first).

    Examples:
        >>> mem = memfn.dnc(nr_cells=4, cell_size=2, read_heads=1)
        >>> cell = memfn.memory_cell(memfn.lstm(3 + mem.read_size, 8), mem, input_size=3)
        >>> state = memfn.batch_state(cell.init_state(), 5)
        >>> chx, mhx, rv = memfn.compat.dnc_hidden(state, api="2.0", share_memory=True)
        >>> chx[0][0].shape, mhx[0]["memory"].shape, rv.shape
        (torch.Size([1, 5, 8]), torch.Size([5, 4, 2]), torch.Size([5, 2]))
    """
    layers = (state.controller,) if _is_state(state.controller) else state.controller
    chx = [
        (s.h.transpose(0, 1), s.c.transpose(0, 1)) if isinstance(s, LSTMState) else s.h.transpose(0, 1) for s in layers
    ]
    memories = [state.memory] if share_memory else list(state.memory)
    dicts = [memory_dict(m) for m in memories]
    mhx: Any = dicts if (api == "2.0" or not share_memory) else dicts[0]
    reads = None if (api == "1.1" and not pass_through_memory) else state.read_vectors
    return chx, mhx, reads


def _is_state(value: Any) -> bool:
    return isinstance(value, (LSTMState, RNNState))


# -- pytorch-dnc hidden state -> memfn state ------------------------------------------------------


def memory_state(name: str, given: Any, zero: StateT, check: LeafCheck) -> StateT:
    """One memory's state from a mapping with its keys (or its NamedTuple, or None: zeros).

    Examples:
        >>> zero = memfn.dnc(nr_cells=4, cell_size=2, read_heads=1).init()
        >>> given = {**memfn.compat.memory_dict(zero), "memory": torch.ones(4, 2)}
        >>> memfn.compat.memory_state("hidden", given, zero, lambda name, t, z: t).memory.sum()
        tensor(8.)
    """
    cls = type(zero)
    if given is None:
        return zero
    if isinstance(given, cls):
        given = memory_dict(given)
    if not isinstance(given, Mapping):
        raise TypeError(f"{name} must be a dict with keys {list(cls._fields)}, got {describe(given)}")
    missing = [k for k in cls._fields if k not in given]
    if missing:
        raise ValueError(f"{name} is missing keys {missing}; a memory state has keys {list(cls._fields)}")
    build: Callable[..., StateT] = cls  # the NamedTuple's own constructor
    return build(*(check(f"{name}[{k!r}]", given[k], z) for k, z in zip(cls._fields, zero)))


def _memory_states(given: Any, zero: Any, share_memory: bool, num_layers: int, check: LeafCheck) -> Any:
    """The memory part: 1.1.0's dict (shared) or list of dicts, or 2.0's list with one dict per memory."""
    zeros = [zero] if share_memory else list(zero)
    if isinstance(given, (list, tuple)) and not hasattr(given, "_fields"):  # a list, not a state NamedTuple
        if len(given) != len(zeros):
            what = "1 memory (share_memory=True)" if share_memory else f"{num_layers} layers (share_memory=False)"
            raise ValueError(f"hx memory must be a list with one dict per memory, {what}, got {describe(given)}")
        items, names = list(given), [f"memory[{i}]" for i in range(len(zeros))]
    elif share_memory:
        items, names = [given], ["memory"]
    else:
        raise ValueError(f"hx memory must be a list of {num_layers} dicts (share_memory=False), got {describe(given)}")
    states = [memory_state(n, g, z, check) for n, g, z in zip(names, items, zeros)]
    return states[0] if share_memory else tuple(states)


def _controller_state(name: str, given: Any, zero: Any, check: LeafCheck) -> Any:
    # dnc's layout is (num_hidden_layers, B, H); the pure core's is (B, num_hidden_layers, H).
    if given is None:
        return zero
    if isinstance(zero, LSTMState):
        if not isinstance(given, (tuple, list)) or len(given) != 2:
            raise ValueError(f"{name} must be an (h, c) pair for rnn_type='lstm', got {describe(given)}")
        h, c = given
        return LSTMState(
            check(f"{name}[0]", h, zero.h.transpose(0, 1)).transpose(0, 1),
            check(f"{name}[1]", c, zero.c.transpose(0, 1)).transpose(0, 1),
        )
    return RNNState(check(name, given, zero.h.transpose(0, 1)).transpose(0, 1))


def cell_state(
    hx: Any, zero: CellState, *, share_memory: bool, num_layers: int, reset_experience: bool, check: LeafCheck
) -> CellState:
    """The batched :class:`~memfn.cell.CellState` from a pytorch-dnc ``hx`` of either layout.

    ``zero``: the all-zero state of the right batch size, whose shapes the parts are checked against;
    ``check`` validates one leaf. Any part may be ``None`` (zeros), as may each layer's entry.

    Examples:
        >>> rnn = memfn.DNC(input_size=3, hidden_size=8, nr_cells=4, cell_size=2, read_heads=1)
        >>> state = rnn.initial_state((None, None, None), batch_size=5, reset_experience=False, like=torch.zeros(1))
        >>> type(state).__name__, state.memory.memory.shape  # cell_state behind the shells' initial_state
        ('CellState', torch.Size([5, 4, 2]))
    """
    if hx is None:
        hx = (None, None, None)
    if not isinstance(hx, (tuple, list)) or len(hx) != 3:
        raise ValueError(f"hx must be None or a tuple (controller_hidden, memory, read_vectors), got {describe(hx)}")
    chx, mhx, last_read = hx
    single = _is_state(zero.controller)
    zero_ctrl = (zero.controller,) if single else zero.controller
    ctrl: Any = zero.controller
    if chx is not None:
        if not isinstance(chx, (list, tuple)) or len(chx) != num_layers:
            raise ValueError(
                f"hx controller_hidden must be a list of {num_layers} layer states (num_layers={num_layers}), "
                f"got {describe(chx)}"
            )
        states = tuple(_controller_state(f"controller_hidden[{i}]", g, z, check)
                       for i, (g, z) in enumerate(zip(chx, zero_ctrl)))  # fmt: skip
        ctrl = states[0] if single else states
    memory = zero.memory
    if mhx is not None and not reset_experience and not _is_empty_list(mhx):
        memory = _memory_states(mhx, zero.memory, share_memory, num_layers, check)
    reads = zero.read_vectors if last_read is None else check("read_vectors", last_read, zero.read_vectors)
    return CellState(ctrl, memory, reads)


def _is_empty_list(mhx: Any) -> bool:
    """2.0's ``[]`` (or a list of ``None``s) for "no memory yet"."""
    return type(mhx) in (list, tuple) and all(m is None for m in mhx)


# -- debug records ------------------------------------------------------------------------------


def debug_record(views: Sequence[Mapping[str, Tensor]], keys: Sequence[str], api: str) -> dict[str, Any]:
    """pytorch-dnc's ``debug=True`` dictionary from one view (batch element 0) per (time, layer).

    1.1.0: ``{key: ndarray (T * layers, prod(shape))}``; 2.0: ``{key: [ndarray (rows, cols)] per
    (time, layer)}``, each view reshaped to ``(-1, last axis)`` as 2.0 does.

    Examples:
        >>> views = [{"usage_vector": torch.zeros(4)} for _ in range(3)]  # 3 steps, 1 layer
        >>> memfn.compat.debug_record(views, ["usage_vector"], "1.1")["usage_vector"].shape
        (3, 4)
        >>> len(memfn.compat.debug_record(views, ["usage_vector"], "2.0")["usage_vector"])
        3
    """
    arrays = {key: [v[key].detach().cpu().numpy() for v in views] for key in keys}
    if api == "2.0":
        return {key: [a.reshape(-1, a.shape[-1]) for a in steps] for key, steps in arrays.items()}
    return {key: np.stack([a.reshape(-1) for a in steps]) for key, steps in arrays.items()}


__all__ = [
    "API_VERSIONS",
    "NOT_GIVEN",
    "cell_state",
    "debug_record",
    "describe",
    "dnc_api",
    "dnc_hidden",
    "memory_dict",
    "memory_state",
    "resolve_device",
    "shared_memory",
]
