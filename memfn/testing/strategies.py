"""Hypothesis strategies: memory sizes, interface vectors, and states a memory can really be in.

A state is drawn as a *recipe* (a :class:`MemoryCase`): sizes, a dtype, a random walk of interface
vectors from ``init()``, and an adversarial edit of where the walk ended. The recipe shrinks well
(fewer cells, fewer steps, zeros in ``xi``, no edit) and prints as the interface fields that matter.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from memfn._memory import Memory

if TYPE_CHECKING:
    from hypothesis.vendor.pretty import RepresentationPrinter

#: The dtypes drawn by default: float32 (what training runs) and float64 (what tight checks need).
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
#: Interface entries far from zero: 30 saturates every sigmoid and softmax; 1e6 is extreme but
#: finite (strengths of a million, write vectors of a million) in float32 and float64.
EXTREMES: tuple[float, ...] = (30.0, 1e6)
#: The size arguments a factory may take (those in its signature are drawn; see :func:`sizes_for`).
SIZE_NAMES = ("nr_cells", "cell_size", "read_heads", "sparse_reads", "temporal_reads")

seeds = st.integers(0, 2**31 - 1)


def random_tensor(seed: int, *shape: int, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``scale * randn(*shape)`` from its own generator: draw ``seed`` with hypothesis, not the values."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=dtype)


def reached_state(memory: Memory, seed: int, steps: int, scale: float = 3.0, dtype: torch.dtype = torch.float64) -> Any:
    """The state after ``steps`` seeded random interface vectors ``scale * randn``."""
    g = torch.Generator().manual_seed(seed)
    state = memory.init(dtype)
    for _ in range(steps):
        _, state = memory.step(state, scale * torch.randn(memory.interface_size, generator=g, dtype=dtype))
    return state


def memory_sizes(
    max_cells: int = 8,
    max_cell_size: int = 4,
    max_read_heads: int = 3,
    sparse_reads: bool = False,
    temporal_reads: bool = False,
) -> st.SearchStrategy[dict[str, int]]:
    """Dicts of ``nr_cells``, ``cell_size``, ``read_heads`` (and ``sparse_reads``, ``temporal_reads``
    in ``[1, nr_cells]`` when asked), shrinking towards one cell of width one read by one head."""

    @st.composite
    def sizes(draw: st.DrawFn) -> dict[str, int]:
        size = {
            "nr_cells": draw(st.integers(1, max_cells)),
            "cell_size": draw(st.integers(1, max_cell_size)),
            "read_heads": draw(st.integers(1, max_read_heads)),
        }
        if sparse_reads:
            size["sparse_reads"] = draw(st.integers(1, size["nr_cells"]))
        if temporal_reads:
            size["temporal_reads"] = draw(st.integers(1, size["nr_cells"]))
        return size

    return sizes()


def sizes_for(memory_factory: Callable[..., Memory]) -> st.SearchStrategy[dict[str, int]]:
    """:func:`memory_sizes` for the size arguments (:data:`SIZE_NAMES`) that ``memory_factory``
    takes and does not fix (``functools.partial`` keywords stay as given). ``memfn.dnc`` gets
    three sizes, ``memfn.sam`` also ``sparse_reads``, ``memfn.sdnc`` also ``temporal_reads``, a
    factory without arguments none. Raises ``TypeError`` for other required arguments."""
    try:
        params = inspect.signature(memory_factory).parameters
    except (TypeError, ValueError):  # no signature (a builtin): the three dense sizes
        return memory_sizes()
    fixed = set(memory_factory.keywords) if isinstance(memory_factory, functools.partial) else set()
    open_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    unknown = [n for n, p in params.items() if p.kind in open_kinds and p.default is p.empty and n not in SIZE_NAMES]
    if unknown:
        raise TypeError(
            f"memory_factory needs {unknown}, which memfn.testing cannot draw; pass sizes= (a strategy of "
            "keyword-argument dicts) or a functools.partial that fixes them"
        )
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [n for n in SIZE_NAMES if n not in fixed and (n in params or (takes_any and n in SIZE_NAMES[:3]))]
    sizes = memory_sizes(sparse_reads="sparse_reads" in names, temporal_reads="temporal_reads" in names)
    return sizes.map(lambda size: {k: v for k, v in size.items() if k in names})


def interface_vectors(
    size: int, dtype: torch.dtype = torch.float32, scale: float = 5.0, extremes: Sequence[float] = EXTREMES
) -> st.SearchStrategy[Tensor]:
    """Interface vectors ``[size]``: floats in ``[-scale, scale]``, some entries replaced by
    ``+-extremes``. Shrinks towards zeros (every gate half open, strengths ``1 + log 2``)."""
    moderate = st.lists(st.floats(-scale, scale, allow_subnormal=False), min_size=size, max_size=size)
    signed = sorted({sign * e for e in extremes for sign in (1.0, -1.0)}, key=abs)
    overrides = (
        st.lists(st.tuples(st.integers(0, size - 1), st.sampled_from(signed)), max_size=size) if signed else st.just([])
    )

    def vector(parts: tuple[list[float], list[tuple[int, float]]]) -> Tensor:
        values, extreme = parts
        for i, v in extreme:
            values[i] = v
        return torch.tensor(values, dtype=dtype)

    return st.tuples(moderate, overrides).map(vector)


@st.composite
def usage_vectors(draw: st.DrawFn, max_cells: int = 16, dtype: torch.dtype = torch.float64) -> Tensor:
    """Usage vectors ``[N]`` in ``[0, 1]``, with exact 0s, 0.5s and 1s mixed in (ties and edges)."""
    n = draw(st.integers(1, max_cells))
    unit = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))
    return torch.tensor(draw(st.lists(unit, min_size=n, max_size=n)), dtype=dtype)


# -- Adversarial edits of a reached state -------------------------------------------------------------
# Each keeps the state valid: memory rows are free, usage may be anything in [0, 1], and the
# previous read and write weights may be any sub-distributions. (Precedence and links are left
# alone: a column of links plus that cell's precedence must stay <= 1, which an edit could break.)


def _zero_memory(state: Any, cell: int) -> Any:
    return state._replace(memory=torch.zeros_like(state.memory))


def _duplicated_rows(state: Any, cell: int) -> Any:
    row = state.memory[cell % state.memory.shape[-2]]
    row = row if bool(row.any()) else torch.ones_like(row)  # equal *non-zero* rows: ties in every lookup
    return state._replace(memory=row.expand_as(state.memory).clone())


def _saturated_usage(state: Any, cell: int) -> Any:
    edits = {}
    if "usage_vector" in state._fields:
        edits["usage_vector"] = torch.ones_like(state.usage_vector)
    if "last_access" in state._fields and "time" in state._fields:  # every cell accessed just now
        edits["last_access"] = state.time.expand_as(state.last_access).clone()
    return state._replace(**edits)


def _weights(state: Any, make: Callable[[Tensor], Tensor]) -> Any:
    fields = [f for f in ("read_weights", "write_weights") if f in state._fields]
    return state._replace(**{f: make(getattr(state, f)) for f in fields})


def _one_hot_weights(state: Any, cell: int) -> Any:
    def one_hot(w: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(torch.tensor(cell % w.shape[-1]), w.shape[-1]).to(w).expand_as(w).clone()

    return _weights(state, one_hot)


def _uniform_weights(state: Any, cell: int) -> Any:
    return _weights(state, lambda w: torch.full_like(w, 1.0 / w.shape[-1]))


#: Adversarial edits by name: the fields they need (any one of them) and ``edit(state, cell) -> state``.
ADVERSARIES: dict[str, tuple[tuple[str, ...], Callable[[Any, int], Any]]] = {
    "zero_memory": (("memory",), _zero_memory),
    "duplicated_rows": (("memory",), _duplicated_rows),
    "saturated_usage": (("usage_vector", "last_access"), _saturated_usage),
    "one_hot_weights": (("read_weights", "write_weights"), _one_hot_weights),
    "uniform_weights": (("read_weights", "write_weights"), _uniform_weights),
}


def adversaries_for(state: Any) -> list[str]:
    """The :data:`ADVERSARIES` that apply to ``state`` (by its field names)."""
    fields = set(getattr(state, "_fields", ()))
    return [name for name, (needs, _) in ADVERSARIES.items() if fields & set(needs)]


def adversarial_state(state: Any, adversary: str, cell: int = 0) -> Any:
    """``state`` edited by the named adversary (``"none"`` leaves it as it is)."""
    return state if adversary == "none" else ADVERSARIES[adversary][1](state, cell)


# -- Memory cases -------------------------------------------------------------------------------------


def describe_factory(memory_factory: Callable[..., Memory], sizes: dict[str, int]) -> str:
    """``sam(sparse_reads=2, nr_cells=3, ...)``: how the memory of a case was built."""
    func, keywords = memory_factory, dict(sizes)
    if isinstance(func, functools.partial):
        keywords = {**func.keywords, **keywords}
        func = func.func
    name = getattr(func, "__name__", type(func).__name__)
    shown = {k: getattr(v, "__name__", None) if callable(v) else None for k, v in keywords.items()}  # no addresses
    return f"{name}({', '.join(f'{k}={shown[k] or repr(v)}' for k, v in keywords.items())})"


def describe_xi(xi: Tensor, fields: Sequence[tuple[str, int]] = ()) -> str:
    """The non-zero fields of ``xi`` (``zeros`` if none): ``zeros except write_gate=[30.0]``."""
    if not bool(xi.any()):
        return "zeros"
    if sum(n for _, n in fields) != xi.numel():
        fields = [(str(i), 1) for i in range(xi.numel())]
    parts, start = [], 0
    for name, length in fields:
        values = xi[start : start + length]
        start += length
        if bool(values.any()):
            parts.append(f"{name}={[float(f'{v:.6g}') for v in values.tolist()]}")
    return "zeros except " + ", ".join(parts)


class MemoryCase:
    """One drawn memory and a state it can be in: the recipe and, lazily, what running it gives.

    - ``memory``: ``memory_factory(**sizes)``; ``dtype``: the state's floating dtype;
    - ``walk``: interface vectors ``[interface_size]`` run from ``memory.init(dtype)``;
    - ``adversary``, ``cell``: the edit of where the walk ended (see :data:`ADVERSARIES`);
    - ``state``: that edited state; ``xi``: the next interface vector;
    - ``transitions``: ``(before, xi, reads, after)`` of every step (the walk's, then ``state`` by ``xi``).

    Running happens on first access, inside the test, so a step that raises fails the test (and is
    shrunk) rather than the drawing.
    """

    def __init__(
        self,
        memory_factory: Callable[..., Memory],
        sizes: dict[str, int],
        dtype: torch.dtype,
        walk: Sequence[Tensor],
        adversary: str,
        cell: int,
        xi: Tensor,
    ) -> None:
        self.memory_factory, self.sizes, self.dtype = memory_factory, sizes, dtype
        self.walk, self.adversary, self.cell, self.xi = tuple(walk), adversary, cell, xi
        self.memory = memory_factory(**sizes)

    @functools.cached_property
    def walk_states(self) -> list[Any]:
        """The states of the walk: ``init()`` and after each of its steps."""
        states, self._walk_steps = [self.memory.init(self.dtype)], []
        for xi in self.walk:
            reads, after = self.memory.step(states[-1], xi)
            self._walk_steps.append((states[-1], xi, reads, after))
            states.append(after)
        return states

    @functools.cached_property
    def state(self) -> Any:
        """Where the walk ended, edited by the adversary."""
        return adversarial_state(self.walk_states[-1], self.adversary, self.cell)

    @functools.cached_property
    def transitions(self) -> list[tuple[Any, Tensor, Tensor, Any]]:
        """``(before, xi, reads, after)`` for every step: the walk's, then ``state`` stepped by ``xi``."""
        state = self.state  # runs the walk first
        reads, after = self.memory.step(state, self.xi)
        return [*self._walk_steps, (state, self.xi, reads, after)]

    def __repr__(self) -> str:
        fields = self.memory.interface_fields
        walk = "".join(f"\n  step {i}: xi = {describe_xi(xi, fields)}" for i, xi in enumerate(self.walk))
        edit = "" if self.adversary == "none" else f"\n  then {self.adversary} (cell {self.cell})"
        return (
            f"{describe_factory(self.memory_factory, self.sizes)} in {str(self.dtype).removeprefix('torch.')}: "
            f"init(){walk}{edit}\n  checked step: xi = {describe_xi(self.xi, fields)}"
        )

    def _repr_pretty_(self, printer: RepresentationPrinter, cycle: bool) -> None:  # hypothesis's and IPython's printers
        printer.text(repr(self))


def as_factory(memory: Memory | Callable[..., Memory]) -> Callable[..., Memory]:
    """A factory for ``memory``: itself if it is callable, else a factory returning that memory."""
    if callable(memory):
        return memory
    if not (hasattr(memory, "init") and hasattr(memory, "step")):
        raise TypeError(f"expected a Memory or a factory returning one, got {type(memory).__name__}")

    def the_memory() -> Memory:
        return memory

    return the_memory


@st.composite
def memory_cases(
    draw: st.DrawFn,
    memory_factory: Memory | Callable[..., Memory],
    sizes: st.SearchStrategy[dict[str, int]] | None = None,
    dtypes: Sequence[torch.dtype] = DTYPES,
    min_steps: int = 0,
    max_steps: int = 3,
    adversaries: Sequence[str] | None = None,
    scale: float = 5.0,
    extremes: Sequence[float] = EXTREMES,
) -> MemoryCase:
    """:class:`MemoryCase` s of ``memory_factory`` (a :class:`~memfn._memory.Memory` or a function
    returning one, called with a drawn ``sizes`` dict; default :func:`sizes_for`).

    Draws a dtype, a walk of ``min_steps..max_steps`` :func:`interface_vectors`, an adversary and
    the next ``xi``. The adversary is one of ``adversaries`` that applies to the state (shrinking
    towards the first), by default ``"none"`` or any of :data:`ADVERSARIES`; ``("none",)`` gives
    only reached states, ``("zero_memory",)`` always a zero memory.
    """
    factory = as_factory(memory_factory)
    size = draw(sizes if sizes is not None else sizes_for(factory))
    dtype = draw(st.sampled_from(list(dtypes)))
    memory = factory(**size)
    vectors = interface_vectors(memory.interface_size, dtype, scale, extremes)
    walk = draw(st.lists(vectors, min_size=min_steps, max_size=max_steps))
    state = memory.init(dtype)
    allowed = ["none", *adversaries_for(state)]
    names = allowed if adversaries is None else [a for a in adversaries if a in allowed] or ["none"]
    adversary = draw(st.sampled_from(names))
    cells = state.memory.shape[-2] if "memory" in getattr(state, "_fields", ()) else 1
    cell = draw(st.integers(0, cells - 1)) if adversary in ("duplicated_rows", "one_hot_weights") else 0
    return MemoryCase(factory, size, dtype, walk, adversary, cell, draw(vectors))


def memory_states(
    memory: Memory, dtype: torch.dtype = torch.float32, max_steps: int = 3, **kwargs: Any
) -> st.SearchStrategy[Any]:
    """States of ``memory`` (reached by a walk from ``init()``, maybe adversarially edited): the
    ``state`` of :func:`memory_cases` with a fixed memory and dtype."""
    return memory_cases(memory, dtypes=(dtype,), max_steps=max_steps, **kwargs).map(lambda case: case.state)


__all__ = [
    "ADVERSARIES",
    "DTYPES",
    "EXTREMES",
    "MemoryCase",
    "adversarial_state",
    "adversaries_for",
    "describe_factory",
    "describe_xi",
    "interface_vectors",
    "memory_cases",
    "memory_sizes",
    "memory_states",
    "random_tensor",
    "reached_state",
    "seeds",
    "sizes_for",
    "usage_vectors",
]
