"""The stateful shells: ``nn.Module`` drop-ins for pytorch-dnc's ``DNC`` (package ``dnc``).

A shell owns the parameters, builds and checks the hidden state, loops over time and calls the
pure batched step of :mod:`memfn.cell` with ``dict(self.named_parameters())``. Differences from
``dnc`` that are deliberate fixes: the read vectors of step ``t-1`` are fed to the controller at
step ``t``; the initial state is zeros (``dnc`` draws it at random and shares one tensor for ``h``
and ``c``); ``batch_first=False`` output is time-first; ``PackedSequence`` input works; ``.to()``
moves everything; the hidden state passed in is never mutated.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optree
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from memfn.cell import CellState, batched_step, memory_cell, run
from memfn.controllers import INITS, LSTMState, RNNState, controller
from memfn.dense import DNCState, dnc
from memfn.dense import read as dense_read
from memfn.dense import write as dense_write
from memfn.interface import DNCInterface
from memfn.memory import Memory, ensure_fits, zeros
from memfn.validation import check_module_input, one_of, positive_int, probability


class _Unset:
    """The default of ``share_memory``: "not given" (so the 2.0 spelling may be used), meaning True."""

    def __repr__(self) -> str:
        return "True"


_UNSET: Any = _Unset()
_warned_devices: set[str] = set()

Hidden = tuple[list, Any, Tensor]


def _describe(value: Any) -> str:
    """A short description of a received value, for error messages."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def _transforms_active() -> bool:
    """Inside ``torch.func`` transforms (vmap over an ensemble, grad), ``requires_grad_`` is not allowed."""
    return bool(getattr(torch._C, "_are_functorch_transforms_active", lambda: False)())


def detach(hidden: Any) -> Any:
    """Detach every tensor of a hidden state (any nesting), e.g. between truncated-BPTT chunks."""
    return optree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


def clone(hidden: Any) -> Any:
    """Copy every tensor of a hidden state (any nesting): a state to reuse after passing it to a
    SAM/SDNC fast-path call, which consumes the buffers it is given."""
    return optree.tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside memfn (the user's line)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def resolve_device(gpu_id: int = -1, device: torch.device | str | None = None) -> torch.device:
    """The device from pytorch-dnc's ``gpu_id`` (1.x) or ``device`` (2.0); CPU, with a warning, if
    CUDA was asked for on a machine without it (so published examples run anywhere)."""
    if isinstance(gpu_id, bool) or not isinstance(gpu_id, int):
        raise ValueError(f"gpu_id must be an integer (-1 for CPU), got {gpu_id!r}")
    from_gpu_id = torch.device("cpu") if gpu_id < 0 else torch.device("cuda", gpu_id)
    if device is None:
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


class _Parameters(nn.Module):
    """A flat group of parameters under their own names (``nn.LSTM``'s, for the controllers)."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))


class _IndependentInterface(nn.Module):
    """pytorch-dnc's ``independent_linears=True``: one linear per interface field (``<field>_transform``).

    One big linear is the same map with the field weights stacked; :meth:`fused` builds it, so the
    pure step is the same either way."""

    def __init__(self, fields: Sequence[tuple[str, int]], in_features: int) -> None:
        super().__init__()
        self.fields = [name for name, _ in fields]
        for name, size in fields:
            self.add_module(f"{name}_transform", nn.Linear(in_features, size))

    def fused(self, params: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
        names = [f"{prefix}{f}_transform" for f in self.fields]
        return (torch.cat([params[n + ".weight"] for n in names]), torch.cat([params[n + ".bias"] for n in names]))


class MemoryNetwork(nn.Module):
    """What the DNC, SAM and SDNC shells share; subclasses say which memory to build."""

    #: Keys of the ``debug=True`` dictionary, in order, taken from the memory state.
    debug_keys: tuple[str, ...] = ()
    #: The class of ``self.memories[i]``.
    memory_view: type = None  # type: ignore[assignment]  # set below, once MemoryView exists

    def __init__(
        self,
        memory_factory: Callable[[], Memory],
        input_size: int,
        hidden_size: int,
        rnn_type: str = "lstm",
        num_layers: int = 1,
        num_hidden_layers: int = 2,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0,
        bidirectional: bool = False,
        nonlinearity: str = "tanh",
        gpu_id: int = -1,
        independent_linears: bool = False,
        share_memory: bool = _UNSET,
        debug: bool = False,
        clip: float = 20,
        *,
        device: torch.device | str | None = None,
        share_memory_between_layers: bool = _UNSET,
        output_size: int | None = None,
        compile: bool = False,
        checkpoint_every: int | None = None,
        controller_init: str = "torch",
    ) -> None:
        super().__init__()
        if bidirectional:
            raise NotImplementedError(
                "bidirectional=True is not supported: a memory is written in time order, so a "
                "backward pass over the sequence would need its own memory (pytorch-dnc ignores it)"
            )
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.rnn_type = one_of(
            "rnn_type", rnn_type.lower() if isinstance(rnn_type, str) else rnn_type, ("lstm", "gru", "rnn")
        )
        self.num_layers = positive_int("num_layers", num_layers)
        self.num_hidden_layers = positive_int("num_hidden_layers", num_hidden_layers)
        self.nonlinearity = one_of("nonlinearity", nonlinearity, ("tanh", "relu"))
        self.dropout = probability("dropout", dropout)
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        self.clip = clip
        self.debug = bool(debug)
        self.independent_linears = bool(independent_linears)
        if share_memory is not _UNSET and share_memory_between_layers is not _UNSET:
            if bool(share_memory) != bool(share_memory_between_layers):
                raise ValueError(
                    f"share_memory={share_memory} and share_memory_between_layers="
                    f"{share_memory_between_layers} disagree; they are two spellings of one option"
                )
        chosen = share_memory if share_memory is not _UNSET else share_memory_between_layers
        self.share_memory = True if chosen is _UNSET else bool(chosen)
        self.gpu_id = gpu_id
        self.use_compile = bool(compile)
        self.checkpoint_every = None if checkpoint_every is None else positive_int("checkpoint_every", checkpoint_every)
        self.controller_init = one_of("controller_init", controller_init, INITS)
        self._compile_kwargs: dict[str, Any] = {}
        self._compiled_step: Callable | None = None

        mems = [memory_factory() for _ in range(1 if self.share_memory else self.num_layers)]
        self.memory_config = mems[0]
        read_size = mems[0].read_size
        ctrls = [
            controller(
                self.rnn_type,
                (self.input_size if layer == 0 else self.hidden_size) + read_size,
                self.hidden_size,
                self.num_hidden_layers,
                self.bias,
                self.dropout,
                self.nonlinearity,
                self.controller_init,
            )
            for layer in range(self.num_layers)
        ]
        self.output_size = self.input_size if output_size is None else positive_int("output_size", output_size)
        self.controller_configs = ctrls
        self.cell = memory_cell(ctrls, mems[0] if self.share_memory else mems, self.input_size, self.output_size, clip)
        self._eager_step = batched_step(self.cell, use_vmap=False)

        init = self.cell.init_params()
        self.controllers = nn.ModuleList(
            _Parameters({k.split(".", 2)[2]: v for k, v in init.items() if k.startswith(f"controllers.{layer}.")})
            for layer in range(self.num_layers)
        )
        interface_size = mems[0].interface_size
        if self.independent_linears:
            self.interfaces = nn.ModuleList(
                _IndependentInterface(mems[0].interface_fields, self.hidden_size) for _ in range(self.num_layers)
            )
        else:
            self.interfaces = nn.ModuleList(nn.Linear(self.hidden_size, interface_size) for _ in range(self.num_layers))
        self.output = nn.Linear(self.hidden_size + read_size, self.output_size)
        self.memories = [self.memory_view(self, layer) for layer in range(len(mems))]
        self.to(resolve_device(gpu_id, device))

    # -- parameters and steps ------------------------------------------------------------------

    def step_params(self) -> dict[str, Tensor]:
        """The parameters as the pure cell names them (independent interface linears fused)."""
        params = dict(self.named_parameters())
        if self.independent_linears:
            for layer, interface in enumerate(self.interfaces):
                w, b = interface.fused(params, f"interfaces.{layer}.")
                params[f"interfaces.{layer}.weight"], params[f"interfaces.{layer}.bias"] = w, b
        return params

    def compile(self, **kwargs: Any) -> None:  # type: ignore[override]
        """Run the compiled batched step from now on (``torch.compile`` keyword arguments go to it).

        Unlike ``nn.Module.compile`` this compiles the one-step function, not ``forward``: one
        graph then serves every sequence length (a compiled time loop would unroll per length)."""
        self.use_compile, self._compile_kwargs, self._compiled_step = True, kwargs, None

    def _step(self) -> Callable:
        if not self.use_compile:
            return self._eager_step
        if self._compiled_step is None:
            self._compiled_step = batched_step(self.cell, compile=True, **self._compile_kwargs)
        return self._compiled_step

    # -- hidden state ----------------------------------------------------------------------------

    def _zeros(self, batch_size: int, like: Tensor) -> CellState:
        one = self.cell.init_state(like.dtype, like.device)
        nbytes = sum(t.numel() * t.element_size() for t in optree.tree_leaves(one)) * batch_size
        ensure_fits(nbytes, f"the {type(self).__name__} state for a batch of {batch_size}", like.device)

        def batched(t: Tensor) -> Tensor:
            # Large all-zero leaves (a sparse memory) stay lazily zero-filled: the OS maps zero pages
            # only when touched, so a million-cell memory costs nothing until it is written.
            if getattr(t, "memfn_all_zeros", False):
                return zeros(batch_size, *t.shape, dtype=t.dtype, device=t.device)
            return t.unsqueeze(0).expand(batch_size, *t.shape).contiguous()

        return optree.tree_map(batched, one)

    def _check(self, name: str, value: Any, expected: Tensor) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
        if getattr(value, "_memfn_donated", False):
            raise ValueError(
                f"{name} was consumed by an earlier forward call: the SAM/SDNC fast path updates the memory in "
                "place and takes over the buffers of the state passed in (like JAX buffer donation). Pass "
                "memfn.clone(hidden) to keep a state you want to reuse, or build the module with fast=False"
            )
        if value.shape != expected.shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected {tuple(expected.shape)} "
                "(from the input's batch size and this module's configuration)"
            )
        return value.to(expected.dtype)

    def _memory_state(self, name: str, given: Any, zero: Any) -> Any:
        cls = type(zero)
        if isinstance(given, dict):
            missing = [k for k in cls._fields if k not in given]
            if missing:
                raise ValueError(f"{name} is missing keys {missing}; a memory state has keys {list(cls._fields)}")
            given = cls(**{k: given[k] for k in cls._fields})
        if not isinstance(given, cls):
            raise TypeError(
                f"{name} must be a {cls.__name__} or a dict with keys {list(cls._fields)}, got {_describe(given)}"
            )
        return cls(*(self._check(f"{name}[{k!r}]", g, z) for k, g, z in zip(cls._fields, given, zero)))

    def _controller_state(self, name: str, given: Any, zero: Any) -> Any:
        # dnc's layout is (num_hidden_layers, B, H); the pure core's is (B, num_hidden_layers, H).
        if isinstance(zero, LSTMState):
            if not isinstance(given, (tuple, list)) or len(given) != 2:
                raise ValueError(f"{name} must be an (h, c) pair for rnn_type='lstm', got {_describe(given)}")
            h, c = given
            return LSTMState(
                *(
                    self._check(f"{name}[{i}]", t, z.transpose(0, 1)).transpose(0, 1)
                    for i, t, z in ((0, h, zero.h), (1, c, zero.c))
                )
            )
        return RNNState(self._check(name, given, zero.h.transpose(0, 1)).transpose(0, 1))

    def initial_state(self, hx: Any, batch_size: int, reset_experience: bool, like: Tensor) -> CellState:
        """The batched :class:`~memfn.cell.CellState` from a ``dnc``-style ``hx`` (any part None)."""
        zero = self._zeros(batch_size, like)
        if hx is None:
            hx = (None, None, None)
        if not isinstance(hx, (tuple, list)) or len(hx) != 3:
            raise ValueError(
                f"hx must be None or a tuple (controller_hidden, memory, read_vectors), got {_describe(hx)}"
            )
        chx, mhx, last_read = hx
        cstates = zero.controller
        if chx is not None:
            if not isinstance(chx, (list, tuple)) or len(chx) != self.num_layers:
                raise ValueError(
                    f"hx controller_hidden must be a list of {self.num_layers} layer states (num_layers="
                    f"{self.num_layers}), got {_describe(chx)}"
                )
            cstates = tuple(
                self._controller_state(f"controller_hidden[{i}]", g, z)
                for i, (g, z) in enumerate(zip(chx, zero.controller))
            )
        mstates = zero.memory
        self.fresh_memory = mhx is None or reset_experience  # all zeros: nothing to index yet
        if mhx is not None and not reset_experience:
            if self.share_memory:
                mstates = self._memory_state("memory", mhx, zero.memory)
            else:
                if not isinstance(mhx, (list, tuple)) or len(mhx) != self.num_layers:
                    raise ValueError(
                        f"hx memory must be a list of {self.num_layers} states (share_memory=False), "
                        f"got {_describe(mhx)}"
                    )
                mstates = tuple(
                    self._memory_state(f"memory[{i}]", g, z) for i, (g, z) in enumerate(zip(mhx, zero.memory))
                )
        reads = zero.read_vectors if last_read is None else self._check("read_vectors", last_read, zero.read_vectors)
        return CellState(cstates, mstates, reads)

    def dnc_hidden(self, state: CellState) -> Hidden:
        """``(controller_hidden, memory, read_vectors)`` in the ``dnc`` package's layout."""
        chx = [
            LSTMState(s.h.transpose(0, 1), s.c.transpose(0, 1)) if isinstance(s, LSTMState) else s.h.transpose(0, 1)
            for s in state.controller
        ]
        mhx = state.memory if self.share_memory else list(state.memory)
        return chx, mhx, state.read_vectors

    # -- forward ---------------------------------------------------------------------------------

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype={x.dtype}")
        layout = "(batch, time, input_size)" if self.batch_first else "(time, batch, input_size)"
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"input must have shape {layout} with input_size={self.input_size}, got {tuple(x.shape)}")
        check_module_input(x, next(self.parameters()), self.debug, self.batch_first)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Any = (None, None, None),
        reset_experience: bool = False,
        pass_through_memory: bool = True,
    ):
        """``output, (controller_hidden, memory, read_vectors)[, debug]``, as ``dnc.DNC.forward``."""
        lengths = None
        if isinstance(input, PackedSequence):
            xs, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
            self._check_input(xs.transpose(0, 1) if self.batch_first else xs)
        else:
            self._check_input(input)
            xs = input.transpose(0, 1) if self.batch_first else input
        # Time-first and contiguous: every step's slice then has the same strides whatever the
        # sequence length (a compiled step guards on strides, so a strided view would recompile).
        xs = xs.contiguous()
        state = self.initial_state(hx, xs.shape[1], reset_experience, xs)
        if self.use_compile and not self.debug and torch.is_grad_enabled() and not _transforms_active():
            # Every state after the first carries autograd history; a fresh (or detached) first
            # state would not, and the compiled step guards on requires_grad: it would compile a
            # second graph, forward and backward, for step 0 alone. Leaves that require grad avoid it.
            # (Integer leaves, the sparse memories' positions and stamps, cannot require grad.)
            state = optree.tree_map(
                lambda t: t if t.requires_grad or not t.is_floating_point() else t.detach().requires_grad_(), state
            )
        params = self.step_params()
        kwargs: dict[str, Any] = {"training": self.training, "pass_through_memory": pass_through_memory}
        trace: list | None = [] if self.debug else None
        if trace is not None:
            kwargs["trace"] = trace
        ys, state = self.run_sequence(params, state, xs, lengths, kwargs)
        if lengths is not None:
            output: Tensor | PackedSequence = pack_padded_sequence(ys, lengths, enforce_sorted=False)
        else:
            output = ys.transpose(0, 1) if self.batch_first else ys
        hidden = self.dnc_hidden(state)
        if trace is None:
            return output, hidden
        return output, hidden, self.debug_record(trace, None if lengths is None else int(lengths[0]))

    def run_sequence(
        self, params: dict[str, Tensor], state: CellState, xs: Tensor, lengths: Tensor | None, kwargs: dict[str, Any]
    ) -> tuple[Tensor, CellState]:
        """Run the batched step over ``xs`` ``[T, B, I]`` from ``state`` (subclasses may pick a faster way)."""
        # Debug views need every layer's state, so they run the eager step; the debug trace records
        # states as they are computed, so it cannot be recomputed in segments either.
        step = self._eager_step if self.debug else self._step()
        every = None if self.debug else self.checkpoint_every
        return run(step, params, state, xs, lengths, every, **kwargs)

    def debug_record(self, trace: list, length: int | None = None) -> dict[str, np.ndarray]:
        """``dnc``'s debug dictionary: batch element 0, one row per (time, layer), flattened.

        ``length``: batch element 0's length for packed input. The trace holds the step's states
        before padded steps are masked out, so rows past that length show the state element 0
        keeps (its final state), not what the step computed on padding."""
        if length is not None:
            layers, end = self.num_layers, length * self.num_layers
            final = [trace[end - 1 if self.share_memory else end - layers + layer] for layer in range(layers)]
            trace = trace[:end] + [final[i % layers] for i in range(end, len(trace))]
        views = [self.debug_view(optree.tree_map(lambda t: t[0].detach(), s)) for s in trace]
        return {key: np.stack([v[key].cpu().reshape(-1).numpy() for v in views]) for key in self.debug_keys}

    def debug_view(self, state: Any) -> dict[str, Tensor]:
        """The ``debug_keys`` of one example's memory state (subclasses derive views, e.g. dense weights)."""
        return {key: state[key] for key in self.debug_keys}


class MemoryView:
    """``rnn.memories[i]``: a layer's memory with pytorch-dnc's ``Memory`` methods, on the pure core.

    ``hidden`` is the layer's memory state (or a dict with its keys) with a batch axis; the methods
    return new states and never mutate the one given.
    """

    def __init__(self, network: MemoryNetwork, index: int) -> None:
        self._network = network
        self.index = index

    def _state(self, hidden: Any, batch_size: int, like: Tensor) -> Any:
        zero = self._network._zeros(batch_size, like).memory
        zero = zero if self._network.share_memory else zero[self.index]
        return self._network._memory_state("hidden", hidden, zero)

    def reset(self, batch_size: int = 1, hidden: Any = None, erase: bool = True) -> Any:
        """A zero state for ``batch_size`` examples, or a copy of ``hidden`` (zeroed if ``erase``)."""
        p = next(self._network.parameters())
        zero = self._network._zeros(batch_size, p).memory
        zero = zero if self._network.share_memory else zero[self.index]
        if hidden is None or erase:
            return zero
        return optree.tree_map(torch.clone, self._network._memory_state("hidden", hidden, zero))

    def __call__(self, xi: Tensor, hidden: Any):
        """pytorch-dnc's ``Memory.forward``: controller output ``(B, H)`` -> ``(reads (B, R, W), state)``."""
        net = self._network
        params = net.step_params()
        w, b = params[f"interfaces.{self.index}.weight"], params[f"interfaces.{self.index}.bias"]
        state = self._state(hidden, xi.shape[0], xi)
        return net.memory_config.step(state, torch.nn.functional.linear(xi, w, b))


MemoryNetwork.memory_view = MemoryView


class DenseMemoryView(MemoryView):
    """A DNC layer's memory view: adds pytorch-dnc's ``Memory.write`` and ``Memory.read``."""

    def write(
        self,
        write_key,
        write_vector,
        erase_vector,
        free_gates,
        read_strengths,
        write_strength,
        write_gate,
        allocation_gate,
        hidden,
    ):
        """pytorch-dnc's ``Memory.write`` (activated values, its shapes) -> the new state.
        ``read_strengths`` is accepted for signature compatibility and unused, as in ``dnc``."""
        state = self._state(hidden, write_key.shape[0], write_key)
        io = DNCInterface(
            read_keys=None, read_strengths=None, write_key=write_key, write_strength=write_strength,
            erase_vector=erase_vector.squeeze(-2), write_vector=write_vector.squeeze(-2),
            free_gates=free_gates, allocation_gate=allocation_gate, write_gate=write_gate, read_modes=None,
        )  # fmt: skip
        return dense_write(state, io)

    def read(self, read_keys, read_strengths, read_modes, hidden):
        """pytorch-dnc's ``Memory.read``: ``(read_vectors (B, R, W), new state)``."""
        state = self._state(hidden, read_keys.shape[0], read_keys)
        return dense_read(state, read_keys, read_strengths, read_modes)


class DNC(MemoryNetwork):
    """A Differentiable Neural Computer with pytorch-dnc's constructor and forward contract.

    ``DNC(input_size, hidden_size, rnn_type='lstm', num_layers=1, num_hidden_layers=2, bias=True,
    batch_first=True, dropout=0, bidirectional=False, nr_cells=5, read_heads=2, cell_size=10,
    nonlinearity='tanh', gpu_id=-1, independent_linears=False, share_memory=True, debug=False,
    clip=20)``, plus keyword-only ``device`` / ``share_memory_between_layers`` (pytorch-dnc 2.0
    spellings), ``output_size`` (default ``input_size``), ``compile``, ``checkpoint_every``
    (recompute segments of that many steps in backward instead of keeping every state: for large
    ``nr_cells``, where the ``N x N`` link matrices dominate memory) and ``controller_init``:
    ``'memoryless'`` (the default: the controller starts with zero recurrent weights and a
    forgetting cell, so the network learns to store in its memory; see
    :func:`memfn.controllers.controller`) or ``'torch'`` (``nn.LSTM``'s initialisation, as pytorch-dnc).

    >>> rnn = DNC(input_size=8, hidden_size=16, nr_cells=4, cell_size=3, read_heads=2)
    >>> out, (chx, mhx, rv) = rnn(torch.randn(2, 5, 8))
    >>> tuple(out.shape), tuple(mhx["link_matrix"].shape), tuple(rv.shape)
    ((2, 5, 8), (2, 1, 4, 4), (2, 6))
    """

    debug_keys = ("memory", "link_matrix", "precedence", "read_weights", "write_weights", "usage_vector")
    memory_view = DenseMemoryView

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rnn_type: str = "lstm",
        num_layers: int = 1,
        num_hidden_layers: int = 2,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0,
        bidirectional: bool = False,
        nr_cells: int = 5,
        read_heads: int = 2,
        cell_size: int = 10,
        nonlinearity: str = "tanh",
        gpu_id: int = -1,
        independent_linears: bool = False,
        share_memory: bool = _UNSET,
        debug: bool = False,
        clip: float = 20,
        *,
        device: torch.device | str | None = None,
        share_memory_between_layers: bool = _UNSET,
        output_size: int | None = None,
        compile: bool = False,
        checkpoint_every: int | None = None,
        controller_init: str = "memoryless",
    ) -> None:
        self.nr_cells, self.read_heads, self.cell_size = nr_cells, read_heads, cell_size
        super().__init__(
            lambda: dnc(nr_cells=nr_cells, cell_size=cell_size, read_heads=read_heads),
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device=device,
            share_memory_between_layers=share_memory_between_layers, output_size=output_size, compile=compile,
            checkpoint_every=checkpoint_every, controller_init=controller_init,
        )  # fmt: skip


__all__ = ["DNC", "DNCState", "DenseMemoryView", "MemoryNetwork", "MemoryView", "clone", "detach", "resolve_device"]
