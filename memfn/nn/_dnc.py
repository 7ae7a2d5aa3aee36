"""``memfn.DNC``: the Differentiable Neural Computer shell (pytorch-dnc's ``DNC`` contract)."""

from __future__ import annotations

import torch

from memfn._dnc import dnc
from memfn.compat import NOT_GIVEN
from memfn.nn._network import MemoryNetwork
from memfn.nn._views import DenseMemoryView


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
        masking: masked content addressing (Csordas & Schmidhuber 2019; see :func:`memfn.dnc`).
        deallocation: the free gates also erase freed cells' content (Csordas & Schmidhuber 2019).
        link_sharpness: learned exponents on the forward/backward link weightings (Csordas & Schmidhuber 2019).
        write_heads: write heads (deepmind/dnc's ``num_writes``); the state's write-head axis
            (``link_matrix`` ``(B, Wh, N, N)``, ``precedence`` and ``write_weights`` ``(B, Wh, N)``)
            grows with it. The defaults are the plain DNC (pytorch-dnc's).
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
        masking: bool = False,
        deallocation: bool = False,
        link_sharpness: bool = False,
        write_heads: int = 1,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self.nr_cells, self.read_heads, self.cell_size = nr_cells, read_heads, cell_size
        self.masking, self.deallocation, self.link_sharpness = masking, deallocation, link_sharpness
        self.write_heads = write_heads
        super().__init__(
            lambda: dnc(nr_cells=nr_cells, cell_size=cell_size, read_heads=read_heads, masking=masking,
                        deallocation=deallocation, link_sharpness=link_sharpness, write_heads=write_heads),
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device=device,
            share_memory_between_layers=share_memory_between_layers, output_size=output_size, compile=compile,
            checkpoint_every=checkpoint_every, controller_init=controller_init, api=api,
        )  # fmt: skip


__all__ = ["DNC"]
