"""``MemoryNetwork``: what the DNC, SAM and SDNC shells share (pytorch-dnc's ``DNC`` contract).

A shell holds the parameters, builds the hidden state and loops over time, calling the pure
batched step of :mod:`memfn.cell` with ``dict(self.named_parameters())``. The rest is named
elsewhere: the checked options and the controllers they configure (``memfn.nn._options``), the
parameter modules and their fusing into the cell's names (``memfn.nn._parameters``), input checks
(``memfn._validation``), the size check of a batched state (``memfn._resources``), pytorch-dnc's
layouts and spellings (:mod:`memfn.compat`) and debug views (``memfn._debug``). Differences from
``dnc`` that are deliberate fixes: the read vectors of step ``t-1`` are fed to the controller at
step ``t``; the initial state is zeros (``dnc`` draws it at random and shares one tensor for ``h``
and ``c``); ``batch_first=False`` output is time-first; ``PackedSequence`` input works; ``.to()``
moves everything; the hidden state passed in is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from memfn import compat
from memfn._debug import View, fields_view, network_record
from memfn._memory import Memory
from memfn._resources import batched_tree
from memfn._validation import time_major
from memfn.cell import CellState, batched_step, memory_cell, run
from memfn.compat import NOT_GIVEN
from memfn.nn._hidden import checked_leaf
from memfn.nn._options import controllers, network_options
from memfn.nn._parameters import fused_parameters, shell_parameters
from memfn.nn._views import MemoryView


class MemoryNetwork(nn.Module):
    """What the DNC, SAM and SDNC shells share; a subclass passes the factory of its memory.

    Examples:
        >>> isinstance(memfn.DNC(input_size=4, hidden_size=8), memfn.MemoryNetwork)
        True
    """

    #: Keys of the ``debug=True`` dictionary, in order, read from :attr:`debug_view`'s dict.
    debug_keys: tuple[str, ...] = ()
    #: One example's memory state -> the tensors named by ``debug_keys`` (and maybe more).
    debug_view: View = staticmethod(fields_view)
    #: The class of ``self.memories[i]``.
    memory_view: type = MemoryView

    # Set in __init__ from the checked options (:class:`~memfn.nn._options.NetworkOptions`, but ``device``).
    input_size: int
    hidden_size: int
    rnn_type: str
    num_layers: int
    num_hidden_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    nonlinearity: str
    gpu_id: int
    independent_linears: bool
    share_memory: bool  # type: ignore[assignment]  # pytorch-dnc's attribute shadows nn.Module.share_memory()
    debug: bool
    clip: float
    output_size: int
    use_compile: bool
    checkpoint_every: int | None
    controller_init: str
    api: str

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
        o = network_options(
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device,
            share_memory_between_layers, output_size, compile, checkpoint_every, controller_init, api,
        )  # fmt: skip
        for name, value in o._asdict().items():
            if name != "device":
                setattr(self, name, value)
        mems = [memory_factory() for _ in range(1 if o.share_memory else o.num_layers)]
        #: The pure memory (``init``/``step``) each layer runs.
        self.pure_memory = mems[0]
        self.controller_configs = controllers(o, mems[0].read_size)
        self.cell = memory_cell(self.controller_configs, mems[0] if o.share_memory else mems, o.input_size,
                                o.output_size, o.clip)  # fmt: skip
        self._eager_step = batched_step(self.cell, use_vmap=False)
        self._compile_kwargs: dict[str, Any] = {}
        self._compiled_step: Callable[..., tuple[Tensor, Any]] | None = None

        self.controllers, self.interfaces, self.output = shell_parameters(self.cell, mems[0], o)
        self.memories = [self.memory_view(self, layer) for layer in range(len(mems))]
        self.to(o.device)

    # -- parameters and steps ------------------------------------------------------------------

    def step_params(self) -> dict[str, Tensor]:
        """The parameters as the pure cell names them (independent interface linears fused).

        Examples:
            >>> rnn = memfn.DNC(input_size=4, hidden_size=8, independent_linears=True)
            >>> rnn.step_params()["interfaces.0.weight"].shape  # the per-field linears, stacked
            torch.Size([63, 8])
        """
        return fused_parameters(dict(self.named_parameters()), self.interfaces)

    def compile(self, **kwargs: Any) -> None:
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

    def _step(self) -> Callable[..., tuple[Tensor, Any]]:
        if not self.use_compile:
            return self._eager_step
        if self._compiled_step is None:
            self._compiled_step = batched_step(self.cell, compile=True, **self._compile_kwargs)
        return self._compiled_step

    # -- hidden state ----------------------------------------------------------------------------

    def zero_state(self, batch_size: int, like: Tensor) -> CellState:
        """The all-zero batched :class:`~memfn.cell.CellState` (``like``'s dtype and device)."""
        what = f"the {type(self).__name__} state for a batch of {batch_size}"
        return batched_tree(self.cell.init_state(like.dtype, like.device), batch_size, what, like.device)

    def initial_state(self, hx: Any, batch_size: int, reset_experience: bool, like: Tensor) -> CellState:
        """The batched :class:`~memfn.cell.CellState` from a ``dnc``-style ``hx`` (either release's
        layout, any part None)."""
        return compat.cell_state(
            hx, self.zero_state(batch_size, like), share_memory=self.share_memory, num_layers=self.num_layers,
            reset_experience=reset_experience, check=checked_leaf,
        )  # fmt: skip

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Any = (None, None, None),
        reset_experience: bool = False,
        pass_through_memory: bool = True,
    ) -> tuple[Tensor | PackedSequence, Any] | tuple[Tensor | PackedSequence, Any, dict[str, Any]]:
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
            >>> rnn = memfn.DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3, read_heads=2, debug=True)
            >>> out, (chx, mhx, rv), debug = rnn(torch.randn(2, 6, 4))
            >>> tuple(out.shape), tuple(chx[0][0].shape), tuple(mhx["memory"].shape), tuple(rv.shape)
            ((2, 6, 4), (2, 2, 8), (2, 5, 3), (2, 6))
            >>> debug["usage_vector"].shape  # (T * num_layers, N)
            (6, 5)
            >>> out, hidden, _ = rnn(torch.randn(2, 3, 4), memfn.detach((chx, mhx, rv)), reset_experience=True)
        """
        xs, lengths = time_major(input, self)
        state = self.initial_state(hx, xs.shape[1], reset_experience, xs)
        kwargs: dict[str, Any] = {"training": self.training, "pass_through_memory": pass_through_memory}
        trace: list[Any] = []  # with debug=True, the state after each (time, layer) step
        if self.debug:
            kwargs["trace"] = trace
        ys, state = self.run_sequence(self.step_params(), state, xs, lengths, kwargs)
        output = _in_input_layout(ys, lengths, self.batch_first)
        hidden = compat.dnc_hidden(
            state, api=self.api, share_memory=self.share_memory, pass_through_memory=pass_through_memory
        )
        return (output, hidden, network_record(trace, lengths, self)) if self.debug else (output, hidden)

    def run_sequence(
        self, params: dict[str, Tensor], state: CellState, xs: Tensor, lengths: Tensor | None, kwargs: dict[str, Any]
    ) -> tuple[Tensor, CellState]:
        """Run the batched step over ``xs`` ``[T, B, I]`` from ``state`` (subclasses may pick a faster way)."""
        # Debug views need every layer's state, so they run the eager step; the debug trace records
        # states as they are computed, so it cannot be recomputed in segments either.
        step = self._eager_step if self.debug else self._step()
        every = None if self.debug else self.checkpoint_every
        return run(step, params, state, xs, lengths, every, **kwargs)


def _in_input_layout(ys: Tensor, lengths: Tensor | None, batch_first: bool) -> Tensor | PackedSequence:
    """The outputs ``ys`` ``[T, B, O]`` in the input's layout: packed if the input was (``lengths``),
    else ``(B, T, O)`` if ``batch_first``, else as they are."""
    if lengths is not None:
        return pack_padded_sequence(ys, lengths, enforce_sorted=False)
    return ys.transpose(0, 1) if batch_first else ys


__all__ = ["MemoryNetwork"]
