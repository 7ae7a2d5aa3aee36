"""The fast path of SAM and SDNC: in-place row updates and a sparse backward.

With the maintained IVF index (``knn="faiss", index="ivf"``) a step does no O(N) work; with exact
top-k (the default), flat or HNSW search, the search itself stays O(N) per step.

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
- with ``knn="faiss", index="ivf"`` a :class:`~memfn.ann_index.MaintainedIndex` per example is
  updated with only the rewritten rows and searched, instead of an exact O(N) top-k (``flat`` and
  ``hnsw`` have no cheap row removal: they are built from the buffer each step, as in the pure step).

It gives the pure step's outputs and gradients (tested in float64). It *consumes* the big leaves of
the state it starts from (memory, link tables; the usage stamps are copied), like JAX buffer
donation: see :mod:`memfn.donation`. Gradients do not flow into the memory of a previous call (as after
:func:`memfn.detach`); use the pure path (``fast=False``) to backpropagate through several calls.
"""

from __future__ import annotations

import math
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from memfn import sparse_addressing as S
from memfn.ann_index import MaintainedIndex, maintained_nearest
from memfn.donation import check_not_consumed, donate, hand_over, storage_of
from memfn.interface import CONTENT, NUM_READ_MODES, check_interface
from memfn.knn import KNNConfig, nearest_cells, searchable_rows
from memfn.memory import Memory
from memfn.sparse import SAMState, SparseConfig, sam_interface_fields, split_sam_interface
from memfn.sparse_temporal import SDNCState, apply_link_row_updates, temporal_read_slots, temporal_updates


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
            out.view(-1, out.shape[-1]).index_copy_(0, self.unique, self.grad)
        return out


def _row_index(positions: Tensor, width: int) -> Tensor:
    return positions.unsqueeze(-1).expand(*positions.shape, width)


class _Start(torch.autograd.Function):
    """The first token; its backward hands the initial memory its gradient (if it wants one)."""

    @staticmethod
    def forward(ctx, leaf: Tensor, memory: Tensor, tape: RowTape) -> Tensor:  # type: ignore[override]
        ctx.tape = tape
        return leaf.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        memory_grad = ctx.tape.full_grad() if ctx.needs_input_grad[1] else None
        return torch.zeros_like(grad), memory_grad, None


class _WriteRows(torch.autograd.Function):
    """``M_t = (1 - e) o M_{t-1} + w v^T`` on the rows ``positions`` ``[B, S]``, in place.

    e ``[B, S]`` (1 where the slot's cell is erased), w ``[B, S]``, v ``[B, W]``. Repeated cells add
    their weights. Backward reads the gradient of the new rows, returns those of ``w`` and ``v``
    and leaves the gradient of the old rows, ``(1 - e) o g``, in the tape.
    """

    @staticmethod
    def forward(ctx, token, weights, vector, tape, positions, erase):  # type: ignore[override]
        index = _row_index(positions, vector.shape[-1])
        # Each slot's cell's total write, summed slot by slot in the order the pure step's
        # scatter_add sums it: the rows then equal the pure step's bit for bit, so near-ties in the
        # next search break the same way (an O(S^2) product, small next to the search).
        same = (positions.unsqueeze(-1) == positions.unsqueeze(-2)).to(weights.dtype)  # [B, S, S]
        added = same @ (weights.unsqueeze(-1) * vector.unsqueeze(-2))
        rows = tape.memory.gather(1, index) * (1.0 - erase).unsqueeze(-1) + added
        tape.memory.scatter_(1, index, rows)  # repeats carry identical rows
        ctx.tape, ctx.record = tape, tape.record(positions)
        ctx.save_for_backward(weights, vector, erase)
        return token.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_token):  # type: ignore[override]
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
    def forward(ctx, token, tape, positions):  # type: ignore[override]
        ctx.tape, ctx.record = tape, tape.record(positions)
        return tape.memory.gather(1, _row_index(positions, tape.memory.shape[-1])), token.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows, grad_token):  # type: ignore[override]
        ctx.tape.enter(ctx.record)
        if grad_rows is not None:
            ctx.tape.add_grad_rows(ctx.record, grad_rows)
        return torch.zeros((), dtype=ctx.tape.dtype, device=ctx.tape.device), None, None


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
        self.stamps = last_access.new_full((b, blocks * self.block), pad)
        self.stamps[:, :n] = last_access
        self.minima = self.stamps.view(b, blocks, self.block).amin(-1)

    def least_used(self) -> Tensor:
        block = self.minima.argmin(-1)  # [B]
        rows = self.stamps.view(*self.minima.shape, self.block)[torch.arange(len(block), device=block.device), block]
        return block * self.block + rows.argmin(-1)

    def stamp(self, time: Tensor, positions: Tensor, weights: Tensor) -> None:
        """:func:`memfn.sparse_addressing.last_access`, in place, then refresh the touched blocks."""
        S.last_access(self.stamps, time, positions, weights, in_place=True)
        blocks = positions // self.block  # [B, P]
        view = self.stamps.view(*self.minima.shape, self.block)
        contents = view.gather(1, blocks.unsqueeze(-1).expand(*blocks.shape, self.block))
        self.minima.scatter_(-1, blocks, contents.amin(-1))

    def last_access(self) -> Tensor:
        return self.stamps[:, : self.n]


class FastState(NamedTuple):
    """The small per-step leaves the cell carries on the fast path (the big ones live in the engine)."""

    token: Tensor  # [] orders the in-place steps for autograd
    read_positions: Tensor  # [B, R, P]
    read_weights: Tensor  # [B, R, P]
    write_positions: Tensor  # [B, S]
    write_weights: Tensor  # [B, S]
    time: Tensor  # [B]
    precedence: Tensor  # [B, L] (SDNC) or an empty [B, 0]
    precedence_positions: Tensor  # [B, L] (SDNC) or an empty [B, 0]


class SparseEngine:
    """One batched SAM/SDNC memory on the fast path, for one forward call.

    ``SparseEngine(config, state)`` takes a batched :class:`~memfn.sparse.SAMState` or
    :class:`~memfn.sparse_temporal.SDNCState` (consuming its big leaves), :meth:`memory` gives a
    :class:`~memfn.memory.Memory` whose ``step`` runs on :class:`FastState`, and :meth:`final_state`
    turns the last :class:`FastState` back into the pure state type.
    """

    def __init__(
        self, config: SparseConfig, state: SAMState | SDNCState, indexes: list | None = None, empty: bool = False
    ) -> None:
        """``indexes``: faiss indexes that already match ``state.memory`` (from the previous call);
        ``empty``: the memory is known to be all zeros (no O(N) scan to index it)."""
        check_not_consumed(state, "hx memory")
        self.config = config
        self.empty = empty
        self.sam_size = sum(n for _, n in sam_interface_fields(config.read_heads, config.cell_size))
        self.temporal = isinstance(state, SDNCState)
        self.memory_grad = state.memory.requires_grad
        memory = donate(state.memory)
        self.tape = RowTape(memory)
        self.usage = LeastUsed(state.last_access)
        if self.temporal:  # no gradient passes through the links: they are updated in place
            self.links = [donate(t) for t in (state.link_positions, state.link_matrix, state.rev_link_positions,
                                              state.rev_link_matrix)]  # fmt: skip
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
            token=_Start.apply(leaf, state.memory if self.memory_grad else memory, self.tape),
            read_positions=state.read_positions, read_weights=state.read_weights,
            write_positions=state.write_positions, write_weights=state.write_weights, time=state.time,
            precedence=state.precedence if self.temporal else state.write_weights[:, :0],
            precedence_positions=state.precedence_positions if self.temporal else state.write_positions[:, :0],
        )  # fmt: skip

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
        for b, index in enumerate(self.indexes):  # type: ignore[arg-type]
            ids = torch.unique(positions[b])
            rows = searchable_rows(self.tape.memory[b, ids])

            def every_row(b=b, ids=ids, index=index):  # for a retraining: the indexed rows and these
                known = torch.from_numpy(np.flatnonzero(index.present)).to(ids.device)
                return self._rows(b, torch.unique(torch.cat([known, ids])))

            index.update(ids.cpu().numpy(), rows, every_row)

    def _nearest(self, keys: Tensor, k: int) -> Tensor:
        if self.indexes is None:
            return nearest_cells(self.tape.memory, keys, k, self.knn)
        return maintained_nearest(self.indexes, self.tape.memory, keys, k)

    # -- the step --------------------------------------------------------------------------------

    def step(self, state: FastState, xi: Tensor) -> tuple[Tensor, FastState]:
        c, sam_size = self.config, self.sam_size
        check_interface(xi, c.interface_size)
        io = split_sam_interface(xi[..., :sam_size], c.read_heads, c.cell_size)
        # Write: the previous step's read cells and the least-used one.
        lru = self.usage.least_used()
        positions, weights = S.sparse_write_weights(
            state.read_positions, state.read_weights, lru, io.interpolation_gate, io.write_gate
        )
        erase = (positions == lru.unsqueeze(-1)).to(weights.dtype)
        token = _WriteRows.apply(state.token, weights, io.write_vector, self.tape, positions, erase)
        if self.indexes is not None:
            self._update_indexes(positions)
        precedence, precedence_positions = state.precedence, state.precedence_positions
        if self.temporal:
            rows_update, rev_update, (precedence_positions, precedence) = temporal_updates(
                *self.links, state.precedence_positions, state.precedence, positions, weights.detach()
            )
            link_pos, link_val, rev_pos, rev_val = self.links
            apply_link_row_updates(link_pos, link_val, rows_update, in_place=True)
            apply_link_row_updates(rev_pos, rev_val, rev_update, in_place=True)
        # Read: content slots (and, for the SDNC, temporal slots before them).
        content_pos = self._nearest(io.read_keys, c.sparse_reads)
        read_pos = content_pos
        if self.temporal:
            modes = torch.softmax(xi[..., sam_size:].unflatten(-1, (c.read_heads, NUM_READ_MODES)), dim=-1)
            temporal_pos, temporal = temporal_read_slots(
                *self.links, state.read_positions, state.read_weights, modes, c.temporal_reads
            )
            read_pos = torch.cat([temporal_pos, content_pos], -1)
        rows, token = _GatherRows.apply(token, self.tape, read_pos.flatten(-2))
        rows = rows.unflatten(1, read_pos.shape[1:])
        content = S.sparse_content_weights(
            rows[..., -c.sparse_reads :, :], io.read_keys, io.read_strengths, content_pos
        )
        read_weights = content
        if self.temporal:
            read_weights = torch.cat([temporal, modes[..., CONTENT : CONTENT + 1] * content], -1)
        reads = S.sparse_read_vectors(rows, read_weights)
        time = state.time + 1
        self.usage.stamp(
            time, torch.cat([positions, read_pos.flatten(-2)], -1), torch.cat([weights, read_weights.flatten(-2)], -1)
        )
        return reads, FastState(token, read_pos, read_weights, positions, weights, time, precedence,
                                precedence_positions)  # fmt: skip

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
            last_access=self.usage.last_access(), time=state.time,
        )  # fmt: skip
        if not self.temporal:
            final: SAMState | SDNCState = SAMState(**common)
        else:
            link_pos, link_val, rev_pos, rev_val = self.links
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
    chunks = [array[i * CHECKSUM_CHUNK : (i + 1) * CHECKSUM_CHUNK] for i in which]
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


class IndexCache:
    """The faiss indexes a fast-path call leaves for the next call that continues from its state.

    An entry is used only for the very buffer it indexes (the storage object, not an address that a
    new tensor could land on), with the same layout and unchanged contents (checksum), so an edit
    through ``.data`` or a state that is not the returned one gets fresh indexes, never stale ones.
    The checksum at the end of a call is the one at its start updated for the rows the call touched.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, tuple, Any, list]] = {}
        self._starts: dict[int, tuple[Any, tuple, Any]] = {}  # the checksum of the memory a call started from

    @staticmethod
    def _layout(memory: Tensor) -> tuple:
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
            checksum = updated_checksum(memory, start[2], engine.tape.records)
        elif engine.empty:
            checksum = updated_checksum(memory, zero_checksum(memory), engine.tape.records)
        else:
            checksum = memory_checksum(memory)
        self._entries[layer] = (weakref.ref(storage), layout, checksum, engine.indexes)

    def take(self, layer: int, memory: Tensor) -> list | None:
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

    def __getitem__(self, layer: int) -> list:
        return self._entries[layer][3]
