"""The fast path of SAM and SDNC: in-place row updates and a sparse backward.

With the maintained IVF index (``knn="faiss", index="ivf"``, which the default ``knn="auto"`` picks
above :data:`memfn.sparse.knn.AUTO_EXACT_MAX_CELLS` cells) a step does no O(N) work; with exact
top-k, flat or HNSW search, the search itself stays O(N) per step.

The pure ``step`` of :func:`memfn.sam` / :func:`memfn.sdnc` returns a new memory every step; autograd
then keeps every version (T x N x W floats) and every step copies the whole memory. Here a step
touches only the rows it reads or writes (Rae et al. 2016, "efficient backpropagation"):

- the memory ``[B, N, W]`` is one buffer updated in place (:class:`_WriteRows`); the rows each step
  reads are gathered as copies (:class:`_GatherRows`). Neither saves the memory for backward;
- backward walks the steps in reverse with the gradient of the memory kept only for the rows the
  sequence touched (:class:`RowTape`): a read adds to its rows' gradient, a write maps the
  gradient of its rows back through ``M_t = (1 - e) o M_{t-1} + w v^T``. Autograd orders these
  calls through a chain of tiny "token" tensors, one per step;
- usage stamps are updated in place and the least-used cell comes from block minima (O(sqrt N));
- SDNC links are updated in place (no gradient passes through them, as in the pure step);
- with ``knn="faiss", index="ivf"`` a :class:`~memfn.sparse._ann_index.MaintainedIndex` per example is
  updated with only the rewritten rows and searched, instead of an exact O(N) top-k (``flat`` and
  ``hnsw`` have no cheap row removal: they are built from the buffer each step, as in the pure step).

It gives the pure step's outputs and gradients (tested in float64). It *consumes* the big leaves of
the state it starts from (memory, link tables; the usage stamps are copied), like JAX buffer
donation: see :mod:`memfn._donation`. Gradients do not flow into the memory of a previous call (as after
:func:`memfn.detach`); use the pure path (``fast=False``) to backpropagate through several calls.
"""

from __future__ import annotations

import math
import weakref
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from memfn._donation import check_not_consumed, donate, hand_over, storage_of
from memfn._memory import Memory
from memfn._resources import is_lazy_zeros
from memfn.cell import batched_step, run
from memfn.interface import check_interface
from memfn.sparse import addressing as S
from memfn.sparse._ann_index import MaintainedIndex, maintained_nearest
from memfn.sparse._links import LinkRowUpdate, apply_link_row_updates
from memfn.sparse._sam import SAMInterface, SAMState, SparseConfig, split_sam_interface
from memfn.sparse._sdnc import SDNCInterface, SDNCState, sharpness_exponents, split_sdnc_interface
from memfn.sparse._step import Carried, StepConfig, sparse_step
from memfn.sparse.knn import KNNConfig, nearest_cells, searchable_rows

if TYPE_CHECKING:
    from typing_extensions import Buffer


class RowTape:
    """The memory buffer and, during backward, the gradient of the rows the sequence touched.

    Every gather and write records its positions ``[B, P]``. At the first backward call of a pass
    the recorded rows are numbered (``unique`` over ``b * N + cell``) and a compact gradient
    ``[U, W]`` is allocated: O(T x rows per step), not O(N).
    """

    def __init__(self, memory: Tensor) -> None:
        self.memory = memory  # [B, N, W], updated in place
        # Backward may run after a later call has taken this buffer over: it uses these, never the memory.
        self.shape, self.dtype, self.device = memory.shape, memory.dtype, memory.device
        self.records: list[Tensor] = []
        self.slots: list[Tensor] | None = None
        self.grad: Tensor | None = None
        self.unique: Tensor | None = None
        self._last = -1

    def record(self, positions: Tensor) -> int:
        self.records.append(positions)
        self.slots = None
        return len(self.records) - 1

    def enter(self, record: int) -> None:
        """Called once at the start of each backward call. Backward visits records in decreasing
        order; a record at or above the last one visited means a new backward pass (e.g. with
        ``retain_graph``): start again from a zero gradient."""
        if self.slots is None or record >= self._last:
            b, n = self.shape[:2]
            offset = torch.arange(b, device=self.device).unsqueeze(-1) * n
            flat = torch.cat([(p.reshape(b, -1) + offset).reshape(-1) for p in self.records])
            self.unique, inverse = torch.unique(flat, return_inverse=True)
            sizes = [p.numel() for p in self.records]
            self.slots = [s.reshape(p.shape) for s, p in zip(inverse.split(sizes), self.records)]
            self.grad = torch.zeros(len(self.unique), self.shape[-1], dtype=self.dtype, device=self.device)
        self._last = record

    def grad_rows(self, record: int) -> Tensor:
        return self.grad[self.slots[record]]  # type: ignore[index]

    def add_grad_rows(self, record: int, grad: Tensor) -> None:
        self.grad.index_add_(0, self.slots[record].reshape(-1), grad.reshape(-1, grad.shape[-1]))  # type: ignore

    def set_grad_rows(self, record: int, grad: Tensor) -> None:
        self.grad[self.slots[record].reshape(-1)] = grad.reshape(-1, grad.shape[-1])  # type: ignore[index]

    def full_grad(self) -> Tensor:
        """The gradient of the memory before the first step, as a dense ``[B, N, W]`` (once per pass)."""
        out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        if self.grad is not None:
            out.view(-1, out.shape[-1]).index_copy_(0, cast(Tensor, self.unique), self.grad)
        return out


def _row_index(positions: Tensor, width: int) -> Tensor:
    return positions.unsqueeze(-1).expand(*positions.shape, width)


class _Start(torch.autograd.Function):
    """The first token; its backward hands the initial memory its gradient (if it wants one)."""

    @staticmethod
    def forward(ctx: Any, leaf: Tensor, memory: Tensor, tape: RowTape) -> Tensor:
        ctx.tape = tape
        return leaf.new_zeros(tape.shape[0])  # [B]: the runner masks it per example like any leaf

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        memory_grad = ctx.tape.full_grad() if ctx.needs_input_grad[1] else None
        return torch.zeros_like(grad), memory_grad, None


class _WriteRows(torch.autograd.Function):
    """``M_t = (1 - e) o M_{t-1} + w v^T`` on the rows ``positions`` ``[B, S]``, in place.

    w ``[B, S]``, v ``[B, W]``, least_used ``[B]`` (``e`` is 1 on its slots; -1: nothing erased).
    Repeated cells add their weights (:func:`~memfn.sparse.addressing.written_rows`). Backward
    reads the gradient of the new rows, returns those of ``w`` and ``v`` and leaves the gradient
    of the old rows, ``(1 - e) o g``, in the tape.
    """

    @staticmethod
    def forward(
        ctx: Any, token: Tensor, weights: Tensor, vector: Tensor, tape: RowTape, positions: Tensor, least_used: Tensor
    ) -> Tensor:
        index = _row_index(positions, vector.shape[-1])
        # The pure step's own row arithmetic: the rows equal the pure step's bit for bit, so the
        # next search ranks (and breaks ties) the same way.
        rows = S.written_rows(tape.memory.gather(1, index), least_used, positions, weights, vector)
        tape.memory.scatter_(1, index, rows)  # repeats carry identical rows
        erase = (positions == least_used.unsqueeze(-1)).to(weights.dtype)
        ctx.tape, ctx.record = tape, tape.record(positions)
        ctx.save_for_backward(weights, vector, erase)
        return token.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_token: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:
        weights, vector, erase = ctx.saved_tensors
        ctx.tape.enter(ctx.record)
        g = ctx.tape.grad_rows(ctx.record)  # [B, S, W] = dL/dM_t at each slot's cell
        d_weights = (g * vector.unsqueeze(-2)).sum(-1)
        d_vector = (weights.unsqueeze(-1) * g).sum(-2)
        ctx.tape.set_grad_rows(ctx.record, g * (1.0 - erase).unsqueeze(-1))
        return grad_token, d_weights, d_vector, None, None, None


class _GatherRows(torch.autograd.Function):
    """Copies of the memory rows at ``positions`` ``[B, P]`` -> ``([B, P, W], token)``; backward adds
    to the tape. The next write takes the returned token, so autograd runs this backward only after
    that write's: the gradient of the rows read here is complete before the earlier write maps it."""

    @staticmethod
    def forward(ctx: Any, token: Tensor, tape: RowTape, positions: Tensor) -> tuple[Tensor, Tensor]:
        ctx.tape, ctx.record = tape, tape.record(positions)
        return tape.memory.gather(1, _row_index(positions, tape.memory.shape[-1])), token.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_rows: Tensor | None, grad_token: Tensor | None) -> tuple[Tensor, None, None]:
        ctx.tape.enter(ctx.record)
        if grad_rows is not None:
            ctx.tape.add_grad_rows(ctx.record, grad_rows)
        return torch.zeros(ctx.tape.shape[0], dtype=ctx.tape.dtype, device=ctx.tape.device), None, None


class LeastUsed:
    """Usage stamps ``[B, N]`` updated in place, and the least-recently-used cell in O(sqrt N).

    Stamps are kept in blocks of ``~sqrt(N)`` with each block's minimum; the least-used cell is the
    first minimum of the first minimal block, i.e. the same cell as ``argmin`` over all stamps.
    """

    def __init__(self, last_access: Tensor) -> None:
        b, n = last_access.shape
        # A step refreshes the blocks of its touched cells (33 for SAM's defaults, ~100 for the
        # SDNC's) and scans the block minima: blocks of sqrt(N / 32) cells balance the two.
        self.n, self.block = n, max(1, math.isqrt(n // 32))
        blocks = -(-n // self.block)
        pad = torch.iinfo(torch.long).max  # padding never wins the minimum
        self.padded = last_access.new_full((b, blocks * self.block), pad)
        self.padded[:, :n] = last_access
        self.minima = self.padded.view(b, blocks, self.block).amin(-1)

    def least_used(self) -> Tensor:
        block = self.minima.argmin(-1)  # [B]
        rows = self.padded.view(*self.minima.shape, self.block)[torch.arange(len(block), device=block.device), block]
        return block * self.block + rows.argmin(-1)

    def stamp(self, time: Tensor, positions: Tensor, weights: Tensor) -> None:
        """:func:`memfn.sparse.addressing.last_access`, in place, then refresh the touched blocks."""
        S.last_access(self.padded, time, positions, weights, in_place=True)
        blocks = positions // self.block  # [B, P]
        view = self.padded.view(*self.minima.shape, self.block)
        contents = view.gather(1, blocks.unsqueeze(-1).expand(*blocks.shape, self.block))
        self.minima.scatter_(-1, blocks, contents.amin(-1))

    def stamps(self) -> Tensor:
        """The stamps ``[B, N]`` (a view, without the padding)."""
        return self.padded[:, : self.n]


class FastState(NamedTuple):
    """The small per-step leaves the cell carries on the fast path (the big ones live in the engine)."""

    token: Tensor  # [B] orders the in-place steps for autograd
    read_positions: Tensor  # [B, R, P]
    read_weights: Tensor  # [B, R, P]
    write_positions: Tensor  # [B, S]
    write_weights: Tensor  # [B, S]
    time: Tensor  # [B]
    precedence: Tensor  # [B, L] (SDNC) or an empty [B, 0]
    precedence_positions: Tensor  # [B, L] (SDNC) or an empty [B, 0]


class FastRows:
    """The in-place store (:class:`~memfn.sparse._step.Rows`) of one engine for one step.

    Rows live in the tape's buffer, stamps in :class:`LeastUsed`, links in the engine's tables; the
    token chains the in-place operations for autograd. ``active`` ``[B, 1]`` (packed input): the
    examples past their length write nothing, erase nothing and stamp nothing, so their memory is
    left as it is (their small leaves are restored by the runner, as on the pure path)."""

    def __init__(self, engine: SparseEngine, token: Tensor, active: Tensor | None) -> None:
        self.engine, self.token, self.active = engine, token, active

    def _masked(self, weights: Tensor) -> Tensor:
        return weights if self.active is None else weights * self.active.to(weights.dtype)

    def least_used(self) -> Tensor:
        return self.engine.usage.least_used()

    def write(self, positions: Tensor, weights: Tensor, vector: Tensor, least_used: Tensor) -> None:
        if self.active is not None:  # an inactive example's write slots all get an impossible "least used"
            least_used = torch.where(self.active.squeeze(-1), least_used, -1)
        self.token = _WriteRows.apply(self.token, self._masked(weights), vector, self.engine.tape, positions,  # type: ignore[no-untyped-call]
                                      least_used)  # fmt: skip
        if self.engine.indexes is not None:
            self.engine._update_indexes(positions)

    def nearest(self, keys: Tensor, k: int) -> Tensor:
        return self.engine._nearest(keys, k)

    def gather(self, positions: Tensor) -> Tensor:
        rows, self.token = _GatherRows.apply(self.token, self.engine.tape, positions.flatten(1))  # type: ignore[no-untyped-call]
        return cast(Tensor, rows.unflatten(1, positions.shape[1:]))

    def stamp(self, time: Tensor, positions: Tensor, weights: Tensor) -> None:
        self.engine.usage.stamp(time, positions, self._masked(weights))

    def links(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.engine.link_tables)  # type: ignore[return-value]

    def set_links(self, updates: tuple[LinkRowUpdate, LinkRowUpdate]) -> None:
        rows_update, rev_update = updates
        link_pos, link_val, rev_pos, rev_val = self.engine.link_tables
        apply_link_row_updates(link_pos, link_val, rows_update, in_place=True)
        apply_link_row_updates(rev_pos, rev_val, rev_update, in_place=True)


class SparseEngine:
    """One batched SAM/SDNC memory on the fast path, for one forward call.

    ``SparseEngine(config, state)`` takes a batched :class:`~memfn.sparse.SAMState` or
    :class:`~memfn.sparse._sdnc.SDNCState` (consuming its big leaves), :meth:`memory` gives a
    :class:`~memfn._memory.Memory` whose ``step`` runs on :class:`FastState`, and :meth:`final_state`
    turns the last :class:`FastState` back into the pure state type.
    """

    def __init__(
        self,
        config: SparseConfig,
        state: SAMState | SDNCState,
        indexes: list[MaintainedIndex] | None = None,
        lengths: Tensor | None = None,
        steps_per_input: int = 1,
        debug: bool = False,
    ) -> None:
        """``indexes``: faiss indexes that already match ``state.memory`` (from the previous call);
        ``lengths`` ``[B]``: packed input's lengths (the memory steps ``steps_per_input`` times per
        input step, once per layer sharing it); ``debug``: keep example 0's state after every step."""
        check_not_consumed(state, "hx memory")
        self.config = config
        self.start_time = state.time
        self.lengths = None if lengths is None else lengths.to(state.time.device)
        self.steps_per_input = steps_per_input
        self.snapshots: dict[int, SAMState | SDNCState] | None = {} if debug else None
        # A fresh zero memory (lazily zero-filled) needs no O(N) scan to be indexed.
        self.empty = is_lazy_zeros(state.memory)
        empty = self.empty
        self.temporal = isinstance(state, SDNCState)
        self.memory_grad = state.memory.requires_grad
        memory = donate(state.memory)
        self.tape = RowTape(memory)
        self.usage = LeastUsed(state.last_access)
        if self.temporal:  # no gradient passes through the links: they are updated in place
            sdnc = cast(SDNCState, state)
            self.link_tables = [donate(t) for t in (sdnc.link_positions, sdnc.link_matrix, sdnc.rev_link_positions,
                                              sdnc.rev_link_matrix)]  # fmt: skip
        self.knn: KNNConfig = config.knn
        self.indexes = indexes
        # Only IVF supports removing rows by id cheaply; flat and HNSW are searched as the pure step
        # does (an index built from the buffer each step, O(N)).
        maintained = self.knn.backend == "faiss" and self.knn.index == "ivf"
        if not maintained:
            self.indexes = None
        elif self.indexes is None:
            self.indexes = self._build_indexes(empty)
        leaf = torch.zeros((), device=memory.device, requires_grad=True)
        self._first = FastState(
            token=_Start.apply(leaf, state.memory if self.memory_grad else memory, self.tape),  # type: ignore[no-untyped-call]
            read_positions=state.read_positions, read_weights=state.read_weights,
            write_positions=state.write_positions, write_weights=state.write_weights, time=state.time,
            precedence=cast(SDNCState, state).precedence if self.temporal else state.write_weights[:, :0],
            precedence_positions=(
                cast(SDNCState, state).precedence_positions if self.temporal else state.write_positions[:, :0]
            ),
        )  # fmt: skip
        if self.snapshots is not None:  # a step that leaves the memory alone traces this state
            self.snapshots[id(self._first.token)] = self._snapshot(self._first)

    # -- nearest neighbours -----------------------------------------------------------------------

    def _rows(self, b: int, ids: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Normalised non-zero rows of example ``b`` among ``ids``, and their ids."""
        rows = self.tape.memory[b, ids]
        nonzero = rows.abs().sum(-1) > 0
        return searchable_rows(rows[nonzero]), ids[nonzero].cpu().numpy()

    def _build_indexes(self, empty: bool) -> list[MaintainedIndex]:
        b, n, w = self.tape.memory.shape
        indexes = [MaintainedIndex(n, w, self.knn.num_lists, self.knn.index_checks) for _ in range(b)]
        everything = torch.arange(n, device=self.tape.memory.device)
        for i, index in enumerate(indexes):  # an O(N) scan, once per call that starts from a given memory
            index.rebuild(*(self._rows(i, everything[:0]) if empty else self._rows(i, everything)))
        return indexes

    def _update_indexes(self, positions: Tensor) -> None:
        for b, index in enumerate(cast(list[MaintainedIndex], self.indexes)):
            ids = torch.unique(positions[b])
            rows = searchable_rows(self.tape.memory[b, ids])

            def every_row(
                b: int = b, ids: Tensor = ids, index: MaintainedIndex = index
            ) -> tuple[np.ndarray, np.ndarray]:  # for a retraining: the indexed rows and these
                known = torch.from_numpy(np.flatnonzero(index.present)).to(ids.device)
                return self._rows(b, torch.unique(torch.cat([known, ids])))

            index.update(ids.cpu().numpy(), rows, every_row)

    def _nearest(self, keys: Tensor, k: int) -> Tensor:
        if self.indexes is None:
            return nearest_cells(self.tape.memory, keys, k, self.knn)
        return maintained_nearest(self.indexes, self.tape.memory, keys, k)

    # -- the step --------------------------------------------------------------------------------

    def step(self, state: FastState, xi: Tensor) -> tuple[Tensor, FastState]:
        """:func:`~memfn.sparse._step.sparse_step` on this engine's in-place rows (:class:`FastRows`)."""
        c = self.config
        check_interface(xi, c.interface_size)
        io: SAMInterface | SDNCInterface
        if self.temporal:
            io = split_sdnc_interface(xi, c.read_heads, c.cell_size, c.masking, c.link_sharpness)
        else:
            io = split_sam_interface(xi, c.read_heads, c.cell_size, c.masking)
        modes, sharpness = (io.read_modes, sharpness_exponents(io)) if isinstance(io, SDNCInterface) else (None, None)
        rows = FastRows(self, state.token, self._active(state.time))
        reads, carried = sparse_step(
            rows, Carried(*state[1:]), io.read_keys, io.read_strengths, io.write_vector, io.interpolation_gate,
            io.write_gate, modes, StepConfig(c.sparse_reads, c.temporal_reads), io.read_masks, sharpness,
        )  # fmt: skip
        new = FastState(rows.token, *carried)
        if self.snapshots is not None:
            self.snapshots[id(new.token)] = self._snapshot(new)
        return reads, new

    def _active(self, time: Tensor) -> Tensor | None:
        """Which examples are still inside their sequence (packed input): ``[B, 1]`` or ``None``."""
        if self.lengths is None:
            return None
        return ((time - self.start_time) < self.lengths * self.steps_per_input).unsqueeze(-1)

    def _snapshot(self, state: FastState) -> SAMState | SDNCState:
        """Example 0's whole state now (a batch of one, copied): what a debug view reads."""
        fields = dict(zip(FastState._fields[1:], (t[:1] for t in state[1:])))
        precedence = fields.pop("precedence"), fields.pop("precedence_positions")
        common = dict(memory=self.tape.memory[:1].detach().clone(), last_access=self.usage.stamps()[:1].clone(),
                      **fields)  # fmt: skip
        if not self.temporal:
            return SAMState(**common)
        link_pos, link_val, rev_pos, rev_val = (t[:1].clone() for t in self.link_tables)
        return SDNCState(
            **common, link_matrix=link_val, link_positions=link_pos, rev_link_matrix=rev_val,
            rev_link_positions=rev_pos, precedence=precedence[0], precedence_positions=precedence[1],
        )  # fmt: skip

    def memory(self) -> Memory:
        c = self.config
        return Memory(init=None, step=self.step, interface_size=c.interface_size, read_size=c.read_heads * c.cell_size)  # type: ignore[arg-type]

    def initial_state(self) -> FastState:
        return self._first

    def final_state(self, state: FastState) -> SAMState | SDNCState:
        common = dict(
            # A separate tensor object on the same buffer: the next call empties the object it is
            # given (donation) while this call's backward may still hold the tape.
            memory=self.tape.memory.detach(), read_positions=state.read_positions, read_weights=state.read_weights,
            write_positions=state.write_positions, write_weights=state.write_weights,
            last_access=self.usage.stamps(), time=state.time,
        )  # fmt: skip
        if not self.temporal:
            final: SAMState | SDNCState = SAMState(**common)
        else:
            link_pos, link_val, rev_pos, rev_val = self.link_tables
            final = SDNCState(
                **common, link_matrix=link_val, link_positions=link_pos, rev_link_matrix=rev_val,
                rev_link_positions=rev_pos, precedence=state.precedence,
                precedence_positions=state.precedence_positions,
            )  # fmt: skip
        hand_over(final)  # the buffers now belong to this state alone
        return final


#: Bytes per CRC-32 chunk: chunks are checksummed in parallel (zlib releases the GIL), and a call
#: recomputes only the chunks holding rows it touched.
CHECKSUM_CHUNK = 1 << 20


def _chunks(memory: Tensor) -> np.ndarray:
    return memory.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


def _crc32s(array: np.ndarray, which: list[int]) -> list[int]:
    """CRC-32s of the chunks ``which`` of ``array``, spread over torch's intra-op threads."""
    # numpy's stubs make an array a Buffer (PEP 688) only from Python 3.12.
    chunks = cast("list[Buffer]", [array[i * CHECKSUM_CHUNK : (i + 1) * CHECKSUM_CHUNK] for i in which])
    workers = min(len(chunks), torch.get_num_threads())
    if workers <= 1:
        return [zlib.crc32(c) for c in chunks]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(zlib.crc32, chunks))


def memory_checksum(memory: Tensor) -> tuple[int, ...] | int:
    """A checksum of every byte of ``memory``: CRC-32s of 1 MiB chunks on the CPU (2-3 GiB/s per
    core), a weighted sum of the bytes elsewhere. Catches edits that leave no trace in ``_version``
    (through ``.data`` or numpy)."""
    if memory.device.type != "cpu":
        return device_checksum(memory.detach().contiguous().reshape(-1).view(torch.uint8))
    array = _chunks(memory)
    return tuple(_crc32s(array, list(range(-(-len(array) // CHECKSUM_CHUNK)))))


def updated_checksum(memory: Tensor, before: tuple[int, ...], rows: list[Tensor]) -> tuple[int, ...]:
    """:func:`memory_checksum` of ``memory`` ``[B, N, W]`` (contiguous, on the CPU) whose checksum was
    ``before`` and whose rows changed only at ``rows`` (``[B, ...]`` cell positions): only the chunks
    holding those rows are read again, so a call over a huge memory does not pay an O(N) pass."""
    b, n, w = memory.shape
    row_bytes = w * memory.element_size()
    touched = torch.cat([p.reshape(b, -1) for p in rows], -1) if rows else memory.new_zeros(b, 0, dtype=torch.long)
    starts = (touched + torch.arange(b).unsqueeze(-1) * n).reshape(-1) * row_bytes
    chunks = torch.unique(torch.cat([starts // CHECKSUM_CHUNK, (starts + row_bytes - 1) // CHECKSUM_CHUNK]))
    which = chunks.tolist()
    after = list(before)
    for i, crc in zip(which, _crc32s(_chunks(memory), which)):
        after[i] = crc
    return tuple(after)


def zero_checksum(memory: Tensor) -> tuple[int, ...]:
    """:func:`memory_checksum` of an all-zero tensor shaped like ``memory``, without reading it."""
    size = memory.numel() * memory.element_size()
    full, rest = divmod(size, CHECKSUM_CHUNK)
    zero = zlib.crc32(bytes(CHECKSUM_CHUNK)) if full else 0
    return (zero,) * full + ((zlib.crc32(bytes(rest)),) if rest else ())


def device_checksum(data: Tensor, chunk: int = 1 << 24) -> int:
    """A position-weighted sum of the bytes ``data`` (wrapping int64), computed where ``data`` lives
    in chunks (no copy to the host, bounded temporaries): changing or moving any byte changes it."""
    total = torch.zeros((), dtype=torch.int64, device=data.device)
    for start in range(0, data.numel(), chunk):
        part = data[start : start + chunk].to(torch.int64)
        weights = torch.arange(start + 1, start + 1 + part.numel(), device=data.device, dtype=torch.int64)
        total += (part * (weights * 2654435761 + 1)).sum()
    return int(total)


#: A buffer's layout: shape, strides, storage offset, dtype, device.
_Layout = tuple[tuple[int, ...], tuple[int, ...], int | torch.SymInt, torch.dtype, torch.device]


class IndexCache:
    """The faiss indexes a fast-path call leaves for the next call that continues from its state.

    An entry is used only for the very buffer it indexes (the storage object, not an address that a
    new tensor could land on), with the same layout and unchanged contents (checksum), so an edit
    through ``.data`` or a state that is not the returned one gets fresh indexes, never stale ones.
    The checksum at the end of a call is the one at its start updated for the rows the call touched.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[torch.UntypedStorage], _Layout, tuple[int, ...] | int,
                                       list[MaintainedIndex]]] = {}  # fmt: skip
        # the checksum of the memory a call started from
        self._starts: dict[int, tuple[weakref.ref[torch.UntypedStorage], _Layout, tuple[int, ...] | int]] = {}

    @staticmethod
    def _layout(memory: Tensor) -> _Layout:
        return tuple(memory.shape), memory.stride(), memory.storage_offset(), memory.dtype, memory.device

    def put(self, layer: int, memory: Tensor, engine: SparseEngine) -> None:
        """Keep ``engine``'s indexes for the next call that starts from ``memory`` (its final buffer)."""
        storage = storage_of(memory)
        start = self._starts.pop(layer, None)
        if storage is None or engine.indexes is None:
            return
        layout = self._layout(memory)
        if memory.device.type != "cpu" or not memory.is_contiguous():
            checksum = memory_checksum(memory)
        elif start is not None and start[0]() is storage and start[1] == layout:
            checksum = updated_checksum(memory, cast(tuple[int, ...], start[2]), engine.tape.records)  # a CPU layout
        elif engine.empty:
            checksum = updated_checksum(memory, zero_checksum(memory), engine.tape.records)
        else:
            checksum = memory_checksum(memory)
        self._entries[layer] = (weakref.ref(storage), layout, checksum, engine.indexes)

    def take(self, layer: int, memory: Tensor) -> list[MaintainedIndex] | None:
        """The indexes left for ``memory``'s buffer as it is now, or ``None``; the entry is used up."""
        entry = self._entries.pop(layer, None)
        self._starts.pop(layer, None)
        if entry is None:
            return None
        storage, layout, checksum, indexes = entry
        if storage() is None or storage() is not storage_of(memory) or layout != self._layout(memory):
            return None
        now = memory_checksum(memory)
        self._starts[layer] = (storage, layout, now)
        return indexes if now == checksum else None

    def __getitem__(self, layer: int) -> list[MaintainedIndex]:
        return self._entries[layer][3]


def run_fast(
    cell_for: Callable[[Any], Any],
    config: SparseConfig,
    cache: IndexCache,
    params: dict[str, Tensor],
    state: Any,
    xs: Tensor,
    lengths: Tensor | None,
    step_kwargs: dict[str, Any],
) -> tuple[Tensor, Any]:
    """Run a network over ``xs`` ``[T, B, I]`` with each memory on a :class:`SparseEngine`.

    ``cell_for(memories)`` builds the network's cell on the given memory (one, shared) or memories
    (a tuple, one per layer); ``state`` is the batched cell state, whose memory buffers the engines
    take over; ``cache`` holds the faiss indexes a previous call left; ``lengths`` ``[B]`` for
    packed input. With a ``trace`` in ``step_kwargs`` (debug), the trace receives example 0's whole
    memory state after each step, as on the pure path. Returns the outputs and the final cell
    state (plain SAM/SDNC states again)."""
    shared = isinstance(state.memory, (SAMState, SDNCState))
    layers = [state.memory] if shared else list(state.memory)
    trace = step_kwargs.get("trace")
    engines = [
        SparseEngine(config, s, cache.take(i, s.memory), lengths, steps_per_input(state, shared), trace is not None)
        for i, s in enumerate(layers)
    ]
    memories = [e.memory() for e in engines]
    cell = cell_for(memories[0] if shared else tuple(memories))
    starts = [e.initial_state() for e in engines]
    state = state._replace(memory=starts[0] if shared else tuple(starts))
    ys, state = run(batched_step(cell, use_vmap=False), params, state, xs, lengths, None, **step_kwargs)
    if trace is not None:  # each FastState in the trace -> the snapshot its engine took then
        snapshots = [cast("dict[int, SAMState | SDNCState]", e.snapshots) for e in engines]  # all kept (debug)
        trace[:] = [next(s[id(m.token)] for s in snapshots if id(m.token) in s) for m in trace]
    ends = [state.memory] if shared else list(state.memory)
    finals = [e.final_state(m) for e, m in zip(engines, ends)]
    for i, (engine, final) in enumerate(zip(engines, finals)):
        if engine.indexes is not None:
            cache.put(i, final.memory, engine)
    return ys, state._replace(memory=finals[0] if shared else tuple(finals))


def steps_per_input(state: Any, shared: bool) -> int:
    """How many times a memory steps per input step: once per layer when the layers share it."""
    controller = state.controller
    return len(controller) if shared and isinstance(controller, tuple) and not hasattr(controller, "_fields") else 1


__all__ = ["FastRows", "IndexCache", "SparseEngine", "run_fast"]
