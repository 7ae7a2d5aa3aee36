"""``memfn.SAM`` and ``memfn.SDNC``: drop-ins for pytorch-dnc's sparse shells, on the pure sparse memories.

Same constructor arguments as ``dnc.SAM`` / ``dnc.SDNC`` (1.1.0), plus the keyword-only options of
:class:`memfn.DNC` and the nearest-neighbour options ``knn`` (``"exact"`` or ``"faiss"``),
``index`` (``"flat"``, ``"ivf"``, ``"hnsw"``), ``num_lists`` and ``index_checks``. Deliberate fixes
over pytorch-dnc: the memory is never cloned or re-indexed in full by the shell, reads have a
strength, one least-used cell is erased per step, step counters live in the state (per example),
and SDNC keeps forward and backward links apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from memfn import sparse_addressing as S
from memfn.cell import batched_step, memory_cell, run
from memfn.compat import NOT_GIVEN
from memfn.memory import Memory
from memfn.modules import MemoryNetwork, _transforms_active
from memfn.sparse import sam, usage
from memfn.sparse_fast import IndexCache, SparseEngine
from memfn.sparse_temporal import sdnc

#: Constructor arguments that configure the memory itself (the rest go to MemoryNetwork).
_MEMORY_OPTIONS = ("nr_cells", "cell_size", "read_heads", "sparse_reads", "temporal_reads", "knn", "index",
                   "num_lists", "index_checks")  # fmt: skip


class _SparseNetwork(MemoryNetwork):
    def _build(self, factory: Callable[..., Memory], arguments: dict[str, Any]) -> None:
        """Split the constructor's arguments into the memory's and the network's; keep the memory's
        as attributes (``rnn.nr_cells``, ...) as pytorch-dnc does."""
        arguments = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
        fast = arguments.pop("fast")
        memory = {k: arguments.pop(k) for k in _MEMORY_OPTIONS if k in arguments}
        for name, value in memory.items():
            setattr(self, name, value)
        MemoryNetwork.__init__(self, lambda: factory(**memory), **arguments)
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        self.fast = fast
        self._indexes = IndexCache()  # layer -> the faiss indexes of the memory the last call left

    def uses_fast_path(self, lengths: Tensor | None = None) -> bool:
        """Whether a forward call takes the fast path: ``fast=True`` and none of what it cannot do
        (debug views, ``compile``, ``checkpoint_every``, packed sequences, ``torch.func`` transforms)."""
        return (self.fast and not self.debug and not self.use_compile and not self.checkpoint_every
                and lengths is None and not _transforms_active())  # fmt: skip

    def run_sequence(self, params, state, xs, lengths, kwargs):
        if not self.uses_fast_path(lengths) or 0 in xs.shape[:2]:  # T = 0 or B = 0: nothing to take over
            return super().run_sequence(params, state, xs, lengths, kwargs)
        layers = [state.memory] if self.share_memory else list(state.memory)
        engines = [
            SparseEngine(self.memory_config.config, s, self._cached_indexes(i, s), empty=self.fresh_memory)
            for i, s in enumerate(layers)
        ]
        mems = [e.memory() for e in engines]
        cell = memory_cell(self.controller_configs, mems[0] if self.share_memory else mems, self.input_size,
                           self.output_size, self.clip)  # fmt: skip
        starts = [e.initial_state() for e in engines]
        state = state._replace(memory=starts[0] if self.share_memory else tuple(starts))
        ys, state = run(batched_step(cell, use_vmap=False), params, state, xs, None, None, **kwargs)
        ends = [state.memory] if self.share_memory else list(state.memory)
        finals = [e.final_state(m) for e, m in zip(engines, ends)]
        for i, (engine, final) in enumerate(zip(engines, finals)):
            if engine.indexes is not None:
                self._indexes.put(i, final.memory, engine)
        return ys, state._replace(memory=finals[0] if self.share_memory else tuple(finals))

    def _cached_indexes(self, layer: int, state: Any) -> list | None:
        """The faiss indexes left by the previous call, if ``state`` continues from its memory buffer."""
        return self._indexes.take(layer, state.memory)

    def debug_view(self, state: Any) -> dict[str, Tensor]:
        """pytorch-dnc's debug keys for one example (weightings dense over the N cells), then memfn's."""
        n = state.memory.shape[-2]
        visible = S.gather_rows(state.memory, state.read_positions)  # [R, K, W]
        view = {
            "memory": state.memory,
            "visible_memory": visible,
            "read_weights": S.dense_weights(state.read_positions, state.read_weights, n),
            "write_weights": S.dense_weights(state.write_positions, state.write_weights, n),
            "read_vectors": S.sparse_read_vectors(visible, state.read_weights),  # [R, W]
            "least_used_mem": S.least_recently_used(state.last_access).unsqueeze(-1),  # [1]: next step's erase
            "usage": usage(state),
            "read_positions": state.read_positions,
        }
        if "link_matrix" in self.debug_keys:
            view.update(
                link_matrix=state.link_matrix,  # [N, L]: the kept entries of each row, as in pytorch-dnc
                rev_link_matrix=state.rev_link_matrix,
                precedence=S.dense_weights(state.precedence_positions, state.precedence, n),
                link_positions=state.link_positions,  # memfn's: the columns of those entries
                rev_link_positions=state.rev_link_positions,
            )
        return {key: view[key] for key in self.debug_keys}


class SAM(_SparseNetwork):
    """Sparse Access Memory with pytorch-dnc's ``SAM`` constructor and forward contract.

    The positional arguments are ``dnc.SAM``'s (pytorch-dnc 1.1.0), in its order; the rest are
    keyword-only. The hidden memory state holds the fields of :class:`memfn.sparse.SAMState`;
    ``forward`` is :meth:`memfn.MemoryNetwork.forward`.

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
        sparse_reads: cells each read head reads (K, its nearest by cosine similarity).
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
        knn: nearest-cell search: ``'auto'`` (see :func:`memfn.knn.knn_config`), ``'exact'`` or ``'faiss'``.
        index: the faiss index: ``'flat'`` (exact), ``'ivf'`` or ``'hnsw'`` (approximate).
        num_lists: IVF lists (default ``max(1, nr_cells // 100)``).
        index_checks: IVF lists probed, or HNSW's efSearch (default ``min(32, num_lists)``; HNSW 32).
        fast: run the in-place fast path (``memfn.sparse_fast``) where it applies; it consumes the
            ``hx`` it is given (keep a copy with :func:`memfn.clone`). False: the pure step.
        controller_init: ``'torch'`` (default) or ``'memoryless'`` (see :class:`memfn.DNC`): without
            temporal links SAM orders its reads by content, which needs a controller that counts, and
            the memoryless start learned copy more slowly here.
        api: the pytorch-dnc release whose hidden-state layout ``forward`` returns, ``'1.1'`` or
            ``'2.0'`` (default ``'2.0'`` if ``device`` or ``share_memory_between_layers`` is given,
            else ``'1.1'``; both are accepted on input; see :mod:`memfn.compat`).

    Examples:
        >>> rnn = SAM(input_size=8, hidden_size=16, nr_cells=32, cell_size=4, read_heads=2, sparse_reads=4)
        >>> out, (chx, mhx, rv) = rnn(torch.randn(2, 5, 8))
        >>> tuple(out.shape), tuple(mhx["read_positions"].shape), tuple(rv.shape)
        ((2, 5, 8), (2, 2, 4), (2, 8))
    """

    #: pytorch-dnc's ``SAM`` debug keys, in its order.
    debug_keys = ("memory", "visible_memory", "read_weights", "write_weights", "read_vectors", "least_used_mem",
                  "usage", "read_positions")  # fmt: skip

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
        nr_cells: int = 5000,
        sparse_reads: int = 4,
        read_heads: int = 4,
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
        knn: str = "auto",
        index: str = "flat",
        num_lists: int | None = None,
        index_checks: int | None = None,
        fast: bool = True,
        controller_init: str = "torch",
        api: str | None = None,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self._build(sam, locals())


class SDNC(_SparseNetwork):
    """Sparse DNC with pytorch-dnc's ``SDNC`` constructor and forward contract.

    The positional arguments are ``dnc.SDNC``'s (pytorch-dnc 1.1.0), in its order; the rest are
    keyword-only. The hidden memory state holds the fields of
    :class:`memfn.sparse_temporal.SDNCState`; ``forward`` is
    :meth:`memfn.MemoryNetwork.forward`.

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
        sparse_reads: cells each read head reads (K, its nearest by cosine similarity).
        temporal_reads: links kept per row of the forward and backward link matrices (L).
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
        knn: nearest-cell search: ``'auto'`` (see :func:`memfn.knn.knn_config`), ``'exact'`` or ``'faiss'``.
        index: the faiss index: ``'flat'`` (exact), ``'ivf'`` or ``'hnsw'`` (approximate).
        num_lists: IVF lists (default ``max(1, nr_cells // 100)``).
        index_checks: IVF lists probed, or HNSW's efSearch (default ``min(32, num_lists)``; HNSW 32).
        fast: run the in-place fast path (``memfn.sparse_fast``) where it applies; it consumes the
            ``hx`` it is given (keep a copy with :func:`memfn.clone`). False: the pure step.
        controller_init: ``'torch'`` (default; the memoryless start learned the task scripts' SDNC
            copy command more slowly) or ``'memoryless'`` (see :class:`memfn.DNC`).
        api: the pytorch-dnc release whose hidden-state layout ``forward`` returns, ``'1.1'`` or
            ``'2.0'`` (default ``'2.0'`` if ``device`` or ``share_memory_between_layers`` is given,
            else ``'1.1'``; both are accepted on input; see :mod:`memfn.compat`).

    Examples:
        >>> rnn = SDNC(input_size=8, hidden_size=16, nr_cells=32, cell_size=4, read_heads=2, temporal_reads=2)
        >>> out, (chx, mhx, rv) = rnn(torch.randn(2, 5, 8))
        >>> tuple(out.shape), tuple(mhx["link_matrix"].shape), tuple(mhx["rev_link_matrix"].shape)
        ((2, 5, 8), (2, 32, 2), (2, 32, 2))
    """

    #: pytorch-dnc's ``SDNC`` debug keys, in its order, then memfn's link columns.
    debug_keys = ("memory", "visible_memory", "link_matrix", "rev_link_matrix", "precedence", "read_weights",
                  "write_weights", "read_vectors", "least_used_mem", "usage", "read_positions", "link_positions",
                  "rev_link_positions")  # fmt: skip

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
        nr_cells: int = 5000,
        sparse_reads: int = 4,
        temporal_reads: int = 4,
        read_heads: int = 4,
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
        knn: str = "auto",
        index: str = "flat",
        num_lists: int | None = None,
        index_checks: int | None = None,
        fast: bool = True,
        controller_init: str = "torch",
        api: str | None = None,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self._build(sdnc, locals())


__all__ = ["SAM", "SDNC"]
