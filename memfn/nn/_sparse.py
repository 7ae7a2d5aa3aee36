"""``memfn.SAM`` and ``memfn.SDNC``: drop-ins for pytorch-dnc's sparse shells, on the pure sparse memories.

Same constructor arguments as ``dnc.SAM`` / ``dnc.SDNC`` (1.1.0), plus the keyword-only options of
:class:`memfn.DNC` and the nearest-neighbour options ``knn``, ``index``, ``num_lists`` and
``index_checks``. Deliberate fixes over pytorch-dnc: the memory is never cloned or re-indexed in
full by the shell, reads have a strength, one least-used cell is erased per step, step counters
live in the state (per example), and SDNC keeps forward and backward links apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from memfn._debug import sparse_view
from memfn._memory import Memory
from memfn._torch import in_functorch_transform
from memfn.cell import CellState, memory_cell
from memfn.compat import NOT_GIVEN
from memfn.nn._network import MemoryNetwork
from memfn.sparse import sam, sdnc
from memfn.sparse._fast import IndexCache, run_fast


class _SparseNetwork(MemoryNetwork):
    """A shell whose memory is SAM or SDNC: the in-place fast path where it applies."""

    debug_view = staticmethod(sparse_view)

    def __init__(self, memory_factory: Callable[[], Memory], *args: Any, fast: bool = True, **kwargs: Any) -> None:
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        super().__init__(memory_factory, *args, **kwargs)
        self.fast = fast
        self._indexes = IndexCache()  # layer -> the faiss indexes of the memory the last call left

    def uses_fast_path(self) -> bool:
        """Whether a forward call takes the fast path: ``fast=True`` and none of what it cannot do.

        ``compile=True`` and ``checkpoint_every`` run the pure step (a compiled graph cannot hold
        in-place buffers that outlive it, and recomputing a segment would replay in-place writes),
        as do calls inside ``torch.func`` transforms. Debug views and packed sequences run on
        the fast path, with the same positions and numbers as the pure step."""
        return self.fast and not self.use_compile and not self.checkpoint_every and not in_functorch_transform()

    def run_sequence(
        self, params: dict[str, Tensor], state: CellState, xs: Tensor, lengths: Tensor | None, kwargs: dict[str, Any]
    ) -> tuple[Tensor, CellState]:
        if not self.uses_fast_path() or 0 in xs.shape[:2]:  # T = 0 or B = 0: nothing to take over
            return super().run_sequence(params, state, xs, lengths, kwargs)

        def cell_for(memories: Any) -> Any:  # the network's cell on the fast path's memories
            return memory_cell(self.controller_configs, memories, self.input_size, self.output_size, self.clip)

        return run_fast(cell_for, self.pure_memory.config, self._indexes, params, state, xs, lengths, kwargs)


class SAM(_SparseNetwork):
    """Sparse Access Memory with pytorch-dnc's ``SAM`` constructor and forward contract.

    The positional arguments are ``dnc.SAM``'s (pytorch-dnc 1.1.0), in its order; the rest are
    keyword-only. The hidden memory state holds the fields of :class:`memfn.sparse.SAMState`;
    ``forward`` is :meth:`memfn.MemoryNetwork.forward`. The arguments not listed below mean what
    they mean for :class:`memfn.DNC` (here ``nr_cells`` defaults to 5000 and ``read_heads`` to 4,
    as in pytorch-dnc). The dense DNC's ``deallocation`` and ``write_heads`` do not apply to SAM
    (no free gates, one write per step) and are not arguments here.

    Args:
        sparse_reads: cells each read head reads (K, its nearest by cosine similarity).
        knn: nearest-cell search: ``'auto'`` (see :func:`memfn.sparse.knn.knn_config`), ``'exact'`` or ``'faiss'``.
        index: the faiss index: ``'flat'`` (exact), ``'ivf'`` or ``'hnsw'`` (approximate).
        num_lists: IVF lists (default ``max(1, nr_cells // 100)``).
        index_checks: IVF lists probed, or HNSW's efSearch (default ``min(32, num_lists)``; HNSW 32).
        fast: run the in-place fast path (``memfn.sparse._fast``) where it applies; it consumes the
            ``hx`` it is given (keep a copy with :func:`memfn.clone`). False: the pure step.
        controller_init: ``'torch'`` (default) or ``'memoryless'`` (see :class:`memfn.DNC`): without
            temporal links SAM orders its reads by content, which needs a controller that counts, and
            the memoryless start learned copy more slowly here.
        masking: masked content reads, a learned mask per read head (Csordas & Schmidhuber 2019;
            see :func:`memfn.sam` for the search's approximation).

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
        masking: bool = False,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self.nr_cells, self.read_heads, self.cell_size = nr_cells, read_heads, cell_size
        self.sparse_reads, self.masking = sparse_reads, masking
        self.knn, self.index, self.num_lists, self.index_checks = knn, index, num_lists, index_checks
        super().__init__(
            lambda: sam(nr_cells, cell_size, read_heads, sparse_reads, knn, index, num_lists, index_checks, masking),
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device=device,
            share_memory_between_layers=share_memory_between_layers, output_size=output_size, compile=compile,
            checkpoint_every=checkpoint_every, controller_init=controller_init, api=api, fast=fast,
        )  # fmt: skip


class SDNC(_SparseNetwork):
    """Sparse DNC with pytorch-dnc's ``SDNC`` constructor and forward contract.

    The positional arguments are ``dnc.SDNC``'s (pytorch-dnc 1.1.0), in its order; the rest are
    keyword-only. The hidden memory state holds the fields of
    :class:`memfn.sparse._sdnc.SDNCState`; ``forward`` is
    :meth:`memfn.MemoryNetwork.forward`. The arguments not listed below mean what they mean for
    :class:`SAM` (and :class:`memfn.DNC`). The dense DNC's ``deallocation`` and ``write_heads`` do
    not apply to the SDNC and are not arguments here.

    Args:
        temporal_reads: links kept per row of the forward and backward link matrices (L).
        controller_init: ``'torch'`` (default; the memoryless start learned the task scripts' SDNC
            copy command more slowly) or ``'memoryless'`` (see :class:`memfn.DNC`).
        link_sharpness: learned exponents on the forward/backward temporal reads (Csordas &
            Schmidhuber 2019; see :func:`memfn.sdnc`).

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
        masking: bool = False,
        link_sharpness: bool = False,
    ) -> None:
        """Check the arguments (explained in the class docstring) and build the parameters and memory."""
        self.nr_cells, self.read_heads, self.cell_size = nr_cells, read_heads, cell_size
        self.sparse_reads, self.temporal_reads = sparse_reads, temporal_reads
        self.knn, self.index, self.num_lists, self.index_checks = knn, index, num_lists, index_checks
        self.masking, self.link_sharpness = masking, link_sharpness
        super().__init__(
            lambda: sdnc(nr_cells, cell_size, read_heads, sparse_reads, temporal_reads, knn, index, num_lists,
                         index_checks, masking, link_sharpness),
            input_size, hidden_size, rnn_type, num_layers, num_hidden_layers, bias, batch_first, dropout,
            bidirectional, nonlinearity, gpu_id, independent_linears, share_memory, debug, clip, device=device,
            share_memory_between_layers=share_memory_between_layers, output_size=output_size, compile=compile,
            checkpoint_every=checkpoint_every, controller_init=controller_init, api=api, fast=fast,
        )  # fmt: skip


__all__ = ["SAM", "SDNC"]
