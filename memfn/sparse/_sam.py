"""Sparse Access Memory (SAM, Rae et al. 2016): its interface, state and the ``sam(...)`` factory.

Each read head reads the K cells nearest its key (cosine; exact top-k or a faiss index); the write
goes to the cells read at the previous step and the least-recently-used cell. Every state leaf has
a fixed size, so the step vmaps and compiles (``fullgraph=True`` with the exact backend).

Interface ``xi`` (in order): read keys ``R*W`` (raw), read strengths ``R`` (oneplus), write
vector ``W`` (raw), interpolation gate ``gamma`` ``1`` (sigmoid), write gate ``alpha`` ``1`` (sigmoid);
with ``masking=True`` (issue 18) then read masks ``R*W`` (sigmoid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

import torch
from torch import Tensor

from memfn._donation import check_not_consumed
from memfn._memory import Memory, checked_memory, default_dtype
from memfn._resources import ensure_fits, zeros
from memfn._validation import positive_int
from memfn.interface import check_interface, interface_parts
from memfn.numerics import oneplus
from memfn.sparse._step import Carried, PureRows, StepConfig, sparse_step
from memfn.sparse.knn import KNNConfig, knn_config

if TYPE_CHECKING:
    from memfn.sparse._sdnc import SDNCState


class SAMInterface(NamedTuple):
    """The parsed, activated interface of one SAM step (shapes for one example)."""

    read_keys: Tensor  # [R, W]
    read_strengths: Tensor  # [R]
    write_vector: Tensor  # [W]
    interpolation_gate: Tensor  # [1] gamma: previously read cells vs the least-used cell
    write_gate: Tensor  # [1] alpha
    read_masks: Tensor | None = None  # [R, W] in [0, 1] with masking, else None


def sam_interface_fields(read_heads: int, cell_size: int, masking: bool = False) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of each :class:`SAMInterface` field in ``xi``, in order.

    Examples:
        >>> memfn.sparse.sam_interface_fields(read_heads=2, cell_size=3, masking=True)[-1]
        ('read_masks', 6)
    """
    r, w = read_heads, cell_size
    return (("read_keys", r * w), ("read_strengths", r), ("write_vector", w), ("interpolation_gate", 1),
            ("write_gate", 1)) + mask_fields(r, w, masking)  # fmt: skip


def mask_fields(read_heads: int, cell_size: int, masking: bool) -> tuple[tuple[str, int], ...]:
    """The read masks' field ``R*W``, appended last to a sparse interface with ``masking=True``; else none."""
    return (("read_masks", read_heads * cell_size),) if masking else ()


def sam_interface(parts: dict[str, Tensor], read_heads: int, cell_size: int) -> SAMInterface:
    """The activated :class:`SAMInterface` of :func:`interface_parts` (SAM's fields of an SDNC's too)."""
    masks = parts.get("read_masks")
    return SAMInterface(
        read_keys=parts["read_keys"].unflatten(-1, (read_heads, cell_size)),
        read_strengths=oneplus(parts["read_strengths"]),
        write_vector=parts["write_vector"],
        interpolation_gate=torch.sigmoid(parts["interpolation_gate"]),
        write_gate=torch.sigmoid(parts["write_gate"]),
        read_masks=None if masks is None else torch.sigmoid(masks).unflatten(-1, (read_heads, cell_size)),
    )


def split_sam_interface(xi: Tensor, read_heads: int, cell_size: int, masking: bool = False) -> SAMInterface:
    """Split and activate ``xi`` ``[..., interface_size]`` into a :class:`SAMInterface`.

    Examples:
        >>> io = memfn.sparse.split_sam_interface(torch.zeros(2 * 3 + 2 + 3 + 2 + 6), 2, 3, masking=True)
        >>> io.read_keys.shape, io.read_masks[0]  # sigmoid(0)
        (torch.Size([2, 3]), tensor([0.5000, 0.5000, 0.5000]))
    """
    return sam_interface(
        interface_parts(xi, sam_interface_fields(read_heads, cell_size, masking)), read_heads, cell_size
    )


class SAMState(NamedTuple):
    """One example's SAM state: the memory and sparse weightings (positions + weights).

    ``P = K`` read slots per head for SAM; ``S = R * P + 1`` write slots (last step's read cells,
    then the least-used cell). Usage is kept as access stamps: ``usage = time - last_access``.

    Attributes:
        memory: ``[N, W]``, the cells.
        read_positions: ``[R, P]`` int64, the cells each head read.
        read_weights: ``[R, P]``, the weights of those reads.
        write_positions: ``[S]`` int64, the cells of the last write.
        write_weights: ``[S]``, its weights.
        last_access: ``[N]`` int64, the step of each cell's last non-negligible access (0: never).
        time: ``[]`` int64, steps taken.

    Examples:
        >>> state = memfn.sam(nr_cells=64, cell_size=8, read_heads=2, sparse_reads=4).init()
        >>> state.read_positions.shape, state.write_positions.shape, memfn.sparse.usage(state).shape
        (torch.Size([2, 4]), torch.Size([9]), torch.Size([64]))
    """

    memory: Tensor  # [N, W]
    read_positions: Tensor  # [R, P] int64
    read_weights: Tensor  # [R, P]
    write_positions: Tensor  # [S] int64
    write_weights: Tensor  # [S]
    last_access: Tensor  # [N] int64, the step of each cell's last non-negligible access (0: never)
    time: Tensor  # [] int64, steps taken


def usage(state: SAMState) -> Tensor:
    """Steps since each cell's last non-negligible access ``[N]`` (the SAM paper's ``U^(2)``).

    Examples:
        >>> mem = memfn.sam(nr_cells=64, cell_size=8, read_heads=2, sparse_reads=4)
        >>> _, state = mem.step(mem.init(), torch.randn(mem.interface_size))
        >>> memfn.sparse.usage(state).shape, int(state.time)
        (torch.Size([64]), 1)
    """
    return state.time.unsqueeze(-1) - state.last_access


def initial_sparse_state(
    n: int, w: int, r: int, read_slots: int, dtype: torch.dtype, device: torch.device | str | None
) -> SAMState:
    """Zero memory; each head's read slots on cells ``0..P-1`` with zero weight (no access yet)."""
    item = torch.empty((), dtype=dtype).element_size()
    ensure_fits(n * (w * item + 8), f"a sparse memory of {n:,} cells x {w} ({dtype})", device)
    slots = r * read_slots + 1
    positions = torch.arange(read_slots, device=device) % n
    return SAMState(
        memory=zeros(n, w, dtype=dtype, device=device),
        read_positions=positions.expand(r, read_slots).clone(),
        read_weights=torch.zeros(r, read_slots, dtype=dtype, device=device),
        write_positions=torch.zeros(slots, dtype=torch.long, device=device),
        write_weights=torch.zeros(slots, dtype=dtype, device=device),
        last_access=zeros(n, dtype=torch.long, device=device),
        time=torch.zeros((), dtype=torch.long, device=device),
    )


def carried(state: SAMState | SDNCState) -> Carried:
    """The small leaves of a SAM or SDNC state that :func:`~memfn.sparse._step.sparse_step` carries."""
    empty = state.write_weights[..., :0], state.write_positions[..., :0]  # SAM has no precedence
    sdnc = cast("SDNCState", state)
    precedence = (sdnc.precedence, sdnc.precedence_positions) if hasattr(state, "precedence") else empty
    return Carried(state.read_positions, state.read_weights, state.write_positions, state.write_weights, state.time,
                   *precedence)  # fmt: skip


def sam(
    nr_cells: int,
    cell_size: int,
    read_heads: int,
    sparse_reads: int = 4,
    knn: str = "auto",
    index: str = "flat",
    num_lists: int | None = None,
    index_checks: int | None = None,
    masking: bool = False,
) -> Memory:
    """A SAM memory of ``nr_cells`` (N) cells of width ``cell_size`` (W), ``read_heads`` (R) heads
    each reading ``sparse_reads`` (K) cells.

    The step writes first, then reads from the written memory; ``K * R + 1`` rows change per step.

    With ``masking=True`` each read head has a learned mask ``m`` in ``[0, 1]^W`` on its key and on
    the memory rows (Csordas & Schmidhuber 2019, Sec. 3.1). The nearest-neighbour search holds the
    unmasked rows, so it is asked with the masked key ``k o m`` for each head's K candidates, and
    those are weighted by the exact masked cosine ``cos(k o m, M[i] o m)``. This is an approximation
    of the dense masked read: a row whose masked similarity is high but whose unmasked row is far
    from ``k o m`` (large values in the masked-out columns) may not be among the candidates. With
    ``K = N`` (or an all-ones mask) nothing is missed. De-allocation and several write heads, the
    dense DNC's other options, do not apply: SAM has no free gates (it overwrites the least-used
    cell) and writes once per step.

    Args:
        nr_cells: memory cells (N).
        cell_size: width of a cell (W).
        read_heads: read heads (R).
        sparse_reads: cells each head reads (K, the nearest to its key by cosine similarity).
        knn: the nearest-neighbour backend: ``"auto"`` (exact up to ``memfn.sparse.knn.AUTO_EXACT_MAX_CELLS``
            cells, the fast path's maintained faiss IVF index above), ``"exact"`` or ``"faiss"``.
        index: the faiss index, ``"flat"``, ``"ivf"`` or ``"hnsw"``; ``num_lists`` and
            ``index_checks`` configure it (see :func:`memfn.sparse.knn.knn_config`).
        num_lists: IVF lists.
        index_checks: IVF lists probed, or HNSW's efSearch.
        masking: masked content reads (a learned mask per read head); adds ``R * W`` interface
            entries, last.

    Returns:
        A :class:`~memfn._memory.Memory` whose state is a :class:`SAMState`; ``step(state, xi)`` with
            ``xi`` ``[interface_size]`` returns the reads ``[R, W]`` and the new state.

    Examples:
        >>> mem = sam(nr_cells=32, cell_size=8, read_heads=2, sparse_reads=4)
        >>> reads, state = mem.step(mem.init(), torch.zeros(mem.interface_size))
        >>> tuple(reads.shape), tuple(state.read_positions.shape)
        ((2, 8), (2, 4))
    """
    n, w, r = (positive_int(k, v) for k, v in (("nr_cells", nr_cells), ("cell_size", cell_size),
                                               ("read_heads", read_heads)))  # fmt: skip
    k = _sparse_reads(sparse_reads, n)
    search = knn_config(n, knn, index, num_lists, index_checks)
    masking = bool(masking)
    fields = sam_interface_fields(r, w, masking)
    size = sum(length for _, length in fields)

    def init(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SAMState:
        return initial_sparse_state(n, w, r, k, default_dtype(dtype), device)

    def step(state: SAMState, xi: Tensor) -> tuple[Tensor, SAMState]:
        check_interface(xi, size)
        io = split_sam_interface(xi, r, w, masking)
        rows = PureRows(state.memory, state.last_access, None, search)
        reads, c = sparse_step(rows, carried(state), *io[:5], None, StepConfig(k, 0), io.read_masks)
        return reads, SAMState(rows.memory, c.read_positions, c.read_weights, c.write_positions, c.write_weights,
                               rows.last_access, c.time)  # fmt: skip

    config = SparseConfig(n, w, r, k, 0, search, size, masking)
    return checked_memory(init, step, size, r * w, fields, config, check_not_consumed)


class SparseConfig(NamedTuple):
    """A SAM/SDNC memory's configuration, as the fast path (:mod:`memfn.sparse._fast`) needs it."""

    nr_cells: int
    cell_size: int
    read_heads: int
    sparse_reads: int
    temporal_reads: int  # 0 for SAM
    knn: KNNConfig
    interface_size: int
    masking: bool = False  # masked content reads
    link_sharpness: bool = False  # SDNC: sharpened temporal reads


def _sparse_reads(sparse_reads: int, nr_cells: int) -> int:
    k = positive_int("sparse_reads", sparse_reads)
    if k > nr_cells:
        raise ValueError(f"sparse_reads must be in [1, nr_cells={nr_cells}], got {k}")
    return k


__all__ = ["SAMInterface", "SAMState", "sam", "sam_interface_fields", "split_sam_interface", "usage"]
