"""The stateful shells: ``nn.Module`` drop-ins for pytorch-dnc's ``DNC`` (package ``dnc``).

A shell owns the parameters, builds and checks the hidden state, loops over time and calls the
pure batched step of :mod:`memfn.cell` with ``dict(self.named_parameters())``. Differences from
``dnc`` that are deliberate fixes: the read vectors of step ``t-1`` are fed to the controller at
step ``t``; the initial state is zeros (``dnc`` draws it at random and shares one tensor for ``h``
and ``c``); ``batch_first=False`` output is time-first; ``PackedSequence`` input works; ``.to()``
moves everything; the hidden state passed in is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optree
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from memfn import compat
from memfn.cell import CellState, batched_step, memory_cell, run
from memfn.compat import NOT_GIVEN
from memfn.controllers import INITS, controller
from memfn.dense import DNCState, dnc
from memfn.dense import read as dense_read
from memfn.dense import write as dense_write
from memfn.interface import DNCInterface
from memfn.memory import Memory, ensure_fits, zeros
from memfn.validation import check_module_input, one_of, positive_int, probability


def _transforms_active() -> bool:
    """Inside ``torch.func`` transforms (vmap over an ensemble, grad), ``requires_grad_`` is not allowed."""
    return bool(getattr(torch._C, "_are_functorch_transforms_active", lambda: False)())


def detach(hidden: Any) -> Any:
    """Detach every tensor of a hidden state (any nesting), e.g. between truncated-BPTT chunks.

    Examples:
        >>> rnn = memfn.DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3)
        >>> out, hidden = rnn(torch.randn(2, 6, 4))
        >>> out, hidden = rnn(torch.randn(2, 6, 4), memfn.detach(hidden))  # truncated BPTT: no gradient back
        >>> hidden[1]["memory"].requires_grad, memfn.detach(hidden)[1]["memory"].requires_grad
        (True, False)
    """
    return optree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


def clone(hidden: Any) -> Any:
    """Copy every tensor of a hidden state (any nesting): a state to reuse after passing it to a
    SAM/SDNC fast-path call, which consumes the buffers it is given.

    Examples:
        >>> rnn = memfn.SAM(input_size=4, hidden_size=8, nr_cells=64, cell_size=4, read_heads=1)
        >>> _, hidden = rnn(torch.randn(2, 3, 4))
        >>> kept = memfn.clone(hidden)
        >>> _, new = rnn(torch.randn(2, 3, 4), hidden)  # consumes hidden (fast path)
        >>> _, again = rnn(torch.randn(2, 3, 4), kept)  # the copy is still usable
    """
    return optree.tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, hidden, none_is_leaf=True)


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
    """What the DNC, SAM and SDNC shells share; subclasses say which memory to build.

    Examples:
        >>> isinstance(memfn.DNC(input_size=4, hidden_size=8), memfn.MemoryNetwork)
        True
    """

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
        share_memory: bool = NOT_GIVEN,
        debug: bool = False,
        clip: float = 20,
        *,
        device: torch.device | str | None = NOT_GIVEN,
        share_memory_between_layers: bool = NOT_GIVEN,
        output_size: int | None = None,
        compile: bool = False,
        checkpoint_every: int | None = None,
        controller_init: str = "torch",
        api: str | None = None,
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
        self.share_memory = compat.shared_memory(share_memory, share_memory_between_layers)
        self.api = compat.dnc_api(api, device, share_memory_between_layers)
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
        self.to(compat.resolve_device(gpu_id, device))

    # -- parameters and steps ------------------------------------------------------------------

    def step_params(self) -> dict[str, Tensor]:
        """The parameters as the pure cell names them (independent interface linears fused).

        Examples:
            >>> rnn = memfn.DNC(input_size=4, hidden_size=8, independent_linears=True)
            >>> rnn.step_params()["interfaces.0.weight"].shape  # the per-field linears, stacked
            torch.Size([63, 8])
        """
        params = dict(self.named_parameters())
        if self.independent_linears:
            for layer, interface in enumerate(self.interfaces):
                w, b = interface.fused(params, f"interfaces.{layer}.")
                params[f"interfaces.{layer}.weight"], params[f"interfaces.{layer}.bias"] = w, b
        return params

    def compile(self, **kwargs: Any) -> None:  # type: ignore[override]
        """Run the compiled batched step from now on (``torch.compile`` keyword arguments go to it).

        Unlike ``nn.Module.compile`` this compiles the one-step function, not ``forward``: one
        graph then serves every sequence length (a compiled time loop would unroll per length).

        Examples:
            >>> rnn = memfn.DNC(input_size=4, hidden_size=8)
            >>> rnn.compile(dynamic=False)  # nothing is compiled until the first forward call
            >>> rnn.use_compile
            True
        """
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

    def initial_state(self, hx: Any, batch_size: int, reset_experience: bool, like: Tensor) -> CellState:
        """The batched :class:`~memfn.cell.CellState` from a ``dnc``-style ``hx`` (either release's
        layout, any part None)."""
        return compat.cell_state(
            hx, self._zeros(batch_size, like), share_memory=self.share_memory, num_layers=self.num_layers,
            reset_experience=reset_experience, check=self._check,
        )  # fmt: skip

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
        """Run the network over a sequence: ``output, (controller_hidden, memory, read_vectors)[, debug]``.

        Shapes: B batch, T time, N ``nr_cells``, W ``cell_size``, R ``read_heads``, H ``hidden_size``.

        Args:
            input: ``(B, T, input_size)`` if ``batch_first`` else ``(T, B, input_size)``, or a
                ``PackedSequence`` (sequences of different lengths; padded steps leave the state alone).
            hx: the hidden state a previous call returned, or ``None``/``(None, None, None)`` for
                zeros; any of its three parts may be ``None`` (zeros), as may one layer's memory in a
                list. The layout (either release's is accepted, whatever ``self.api``):

                - ``controller_hidden``: a list with one entry per layer: ``(h, c)`` for LSTMs, ``h``
                  for GRU/RNN, each ``(num_hidden_layers, B, hidden_size)``.
                - ``memory``: a dict (release 1.1 with ``share_memory=True``), a list of one dict per
                  layer (1.1, ``share_memory=False``) or a list with one dict per memory (2.0). The
                  keys are the memory state's fields; for the DNC ``memory`` ``(B, N, W)``,
                  ``link_matrix`` ``(B, 1, N, N)``, ``precedence`` ``(B, 1, N)``, ``read_weights``
                  ``(B, R, N)``, ``write_weights`` ``(B, 1, N)``, ``usage_vector`` ``(B, N)``
                  (SAM/SDNC: the fields of :class:`~memfn.SAMState` / :class:`~memfn.SDNCState`).
                  Plain dicts or ``OrderedDict``s rebuilt by the caller (any key order) and the state
                  NamedTuples are accepted.
                - ``read_vectors``: ``(B, R * W)``, the last step's reads (fed to the controller at the
                  first step of this call).
            reset_experience: start from a zero memory whatever ``hx`` holds (the controller state and
                read vectors in ``hx`` are still used).
            pass_through_memory: if False, the memory is neither read nor written (the controller
                runs alone); the read vectors fed on are zeros and the returned ones ``None`` (1.1)
                or zeros (2.0).

        Returns:
            ``(output, hidden)``, or ``(output, hidden, debug)`` with ``debug=True``.
                ``output``: the input's layout (``(B, T, output_size)`` if ``batch_first``, else
                ``(T, B, output_size)``, or a ``PackedSequence``). ``hidden``: the new
                ``(controller_hidden, memory, read_vectors)`` in this module's layout
                (``self.api``), new tensors (the ``hx`` passed in is never mutated; SAM/SDNC's fast
                path consumes it, see :func:`memfn.clone`). ``debug``: a dict keyed by ``debug_keys``
                (DNC: ``memory``, ``link_matrix``, ``precedence``, ``read_weights``,
                ``write_weights``, ``usage_vector``) of batch element 0's state after each
                (time, layer) step as numpy arrays: for 1.1 one array ``(T * num_layers, features)``
                per key (each view flattened), for 2.0 a list of 2-D arrays ``(rows, last axis)``
                per key.

        Examples:
            >>> rnn = DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3, read_heads=2, debug=True)
            >>> out, (chx, mhx, rv), debug = rnn(torch.randn(2, 6, 4))
            >>> tuple(out.shape), tuple(chx[0][0].shape), tuple(mhx["memory"].shape), tuple(rv.shape)
            ((2, 6, 4), (2, 2, 8), (2, 5, 3), (2, 6))
            >>> debug["usage_vector"].shape  # (T * num_layers, N)
            (6, 5)
            >>> out, hidden, _ = rnn(torch.randn(2, 3, 4), memfn.detach((chx, mhx, rv)), reset_experience=True)
        """
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
        self.fresh_memory = compat.is_fresh_memory(hx, reset_experience)  # all zeros: nothing to index yet
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
        hidden = compat.dnc_hidden(
            state, api=self.api, share_memory=self.share_memory, pass_through_memory=pass_through_memory
        )
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

    def debug_record(self, trace: list, length: int | None = None) -> dict[str, Any]:
        """``dnc``'s debug dictionary: batch element 0, one entry per (time, layer) (see
        :func:`memfn.compat.debug_record` for each release's layout).

        ``length``: batch element 0's length for packed input. The trace holds the step's states
        before padded steps are masked out, so rows past that length show the state element 0
        keeps (its final state), not what the step computed on padding."""
        if length is not None:
            layers, end = self.num_layers, length * self.num_layers
            final = [trace[end - 1 if self.share_memory else end - layers + layer] for layer in range(layers)]
            trace = trace[:end] + [final[i % layers] for i in range(end, len(trace))]
        views = [self.debug_view(optree.tree_map(lambda t: t[0].detach(), s)) for s in trace]
        return compat.debug_record(views, self.debug_keys, self.api)

    def debug_view(self, state: Any) -> dict[str, Tensor]:
        """The ``debug_keys`` of one example's memory state (subclasses derive views, e.g. dense weights)."""
        return {key: getattr(state, key) for key in self.debug_keys}


class MemoryView:
    """``rnn.memories[i]``: a layer's memory with pytorch-dnc's ``Memory`` methods, on the pure core.

    ``hidden`` is the layer's memory state (a dict with its keys, as pytorch-dnc's, or the state
    NamedTuple) with a batch axis; the methods return new states as plain dicts, as pytorch-dnc's
    ``Memory`` does, and never mutate the one given.

    Examples:
        >>> rnn = memfn.DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3, read_heads=2)
        >>> mem = rnn.memories[0]
        >>> hidden = mem.reset(batch_size=2)  # pytorch-dnc's Memory.reset: a zero state dict
        >>> reads, hidden = mem(torch.randn(2, 8), hidden)  # one memory step from a controller output
        >>> reads.shape, hidden["usage_vector"].shape
        (torch.Size([2, 2, 3]), torch.Size([2, 5]))
    """

    def __init__(self, network: MemoryNetwork, index: int) -> None:
        self._network = network
        self.index = index

    def _state(self, hidden: Any, batch_size: int, like: Tensor) -> Any:
        zero = self._network._zeros(batch_size, like).memory
        zero = zero if self._network.share_memory else zero[self.index]
        return compat.memory_state("hidden", hidden, zero, self._network._check)

    def reset(self, batch_size: int = 1, hidden: Any = None, erase: bool = True) -> Any:
        """A zero state for ``batch_size`` examples, or a copy of ``hidden`` (zeroed if ``erase``)."""
        p = next(self._network.parameters())
        zero = self._network._zeros(batch_size, p).memory
        zero = zero if self._network.share_memory else zero[self.index]
        if hidden is None or erase:
            return compat.memory_dict(zero)
        return compat.memory_dict(optree.tree_map(torch.clone, self._state(hidden, batch_size, p)))

    def __call__(self, xi: Tensor, hidden: Any):
        """pytorch-dnc's ``Memory.forward``: controller output ``(B, H)`` -> ``(reads (B, R, W), state)``."""
        net = self._network
        params = net.step_params()
        w, b = params[f"interfaces.{self.index}.weight"], params[f"interfaces.{self.index}.bias"]
        state = self._state(hidden, xi.shape[0], xi)
        reads, new = net.memory_config.step(state, torch.nn.functional.linear(xi, w, b))
        return reads, compat.memory_dict(new)


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
        return compat.memory_dict(dense_write(state, io))

    def read(self, read_keys, read_strengths, read_modes, hidden):
        """pytorch-dnc's ``Memory.read``: ``(read_vectors (B, R, W), new state)``."""
        state = self._state(hidden, read_keys.shape[0], read_keys)
        reads, new = dense_read(state, read_keys, read_strengths, read_modes)
        return reads, compat.memory_dict(new)


class DNC(MemoryNetwork):
    """A Differentiable Neural Computer with pytorch-dnc's constructor and forward contract.

    The positional arguments are ``dnc.DNC``'s (pytorch-dnc 1.1.0), in its order; the rest are
    keyword-only. ``forward(input, hx=(None, None, None), reset_experience=False,
    pass_through_memory=True)`` is :meth:`memfn.MemoryNetwork.forward`.

    Args:
        input_size: features of each input step.
        hidden_size: units of each controller layer (H).
        rnn_type: the controller: ``'lstm'``, ``'gru'`` or ``'rnn'``.
        num_layers: stacked (controller, memory) layers; layer ``l > 0`` reads layer ``l - 1``'s output.
        num_hidden_layers: recurrent layers inside each controller.
        bias: whether the controllers have biases.
        batch_first: input and output ``(B, T, features)`` if True, else ``(T, B, features)``.
        dropout: controller dropout between its hidden layers (training only).
        bidirectional: must be False (``NotImplementedError``; pytorch-dnc ignores it).
        nr_cells: memory cells (N).
        read_heads: read heads (R).
        cell_size: width of a cell (W).
        nonlinearity: ``'tanh'`` or ``'relu'``, for ``rnn_type='rnn'``.
        gpu_id: CUDA device index, -1 for CPU (pytorch-dnc 1.1.0); CPU with a warning when CUDA is missing.
        independent_linears: one ``nn.Linear`` per interface field (``interfaces.<l>.<field>_transform``)
            instead of one for all; the same function either way.
        share_memory: one memory for all layers (default) or one per layer.
        debug: ``forward`` also returns the debug dict (see :meth:`~memfn.MemoryNetwork.forward`).
        clip: controller outputs are clipped to ``[-clip, clip]`` (0 or None: no clipping).
        device: pytorch-dnc 2.0's spelling of ``gpu_id`` (giving it, even ``None``, selects ``api='2.0'``).
        share_memory_between_layers: pytorch-dnc 2.0's spelling of ``share_memory`` (selects ``api='2.0'``).
        output_size: features of each output step (default ``input_size``).
        compile: run the ``torch.compile``d one-step function (one graph for every sequence length).
        checkpoint_every: recompute segments of that many steps in backward instead of keeping every
            state (for large ``nr_cells``, where the memory states dominate).
        controller_init: ``'memoryless'`` (default: zero recurrent weights and a forgetting cell at
            first, so the network learns to store in its memory; see :func:`memfn.controllers.controller`)
            or ``'torch'`` (``nn.LSTM``'s initialisation, as pytorch-dnc).
        api: the pytorch-dnc release whose hidden-state layout ``forward`` returns, ``'1.1'`` or
            ``'2.0'`` (default ``'2.0'`` if ``device`` or ``share_memory_between_layers`` is given,
            else ``'1.1'``; both are accepted on input; see :mod:`memfn.compat`).

    Examples:
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
        share_memory: bool = NOT_GIVEN,
        debug: bool = False,
        clip: float = 20,
        *,
        device: torch.device | str | None = NOT_GIVEN,
        share_memory_between_layers: bool = NOT_GIVEN,
        output_size: int | None = None,
        compile: bool = False,
        checkpoint_every: int | None = None,
        controller_init: str = "memoryless",
        api: str | None = None,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self.nr_cells, self.read_heads, self.cell_size = nr_cells, read_heads, cell_size
        super().__init__(
            lambda: dnc(nr_cells=nr_cells, cell_size=cell_size, read_heads=read_heads),
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device=device,
            share_memory_between_layers=share_memory_between_layers, output_size=output_size, compile=compile,
            checkpoint_every=checkpoint_every, controller_init=controller_init, api=api,
        )  # fmt: skip


__all__ = ["DNC", "DNCState", "DenseMemoryView", "MemoryNetwork", "MemoryView", "clone", "detach"]
