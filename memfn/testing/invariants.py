"""Invariant checkers: each returns ``None`` when its invariant holds, else a message saying what broke.

They take plain tensors or states (any NamedTuple of tensors), so they work inside a hypothesis
test, a pytest assertion (``assert (msg := check_...(x)) is None, msg``) or a debugger session.
``atol`` defaults to :func:`tolerance` of the tensor's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import optree
import torch
from torch import Tensor

Message = str | None


def tolerance(dtype: torch.dtype) -> float:
    """How far a bound may be overshot by rounding: ``sqrt(eps)`` (3.5e-4 in float32, 1.5e-8 in float64)."""
    return torch.finfo(dtype).eps ** 0.5 if dtype.is_floating_point else 0.0


def named_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(name, leaf)`` pairs of a pytree, named like ``state.memory`` or ``reads[0]``."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        for field, value in zip(tree._fields, tree):
            yield from named_leaves(value, f"{prefix}.{field}" if prefix else field)
    elif isinstance(tree, (tuple, list)):
        for i, value in enumerate(tree):
            yield from named_leaves(value, f"{prefix}[{i}]")
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from named_leaves(value, f"{prefix}[{key!r}]")
    else:
        yield prefix, tree


def _first(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _at(x: Tensor, mask: Tensor) -> str:
    index = _first(mask)
    return f"{x[index].item():.6g} at index {index}" if index else f"{x.item():.6g}"


def _atol(x: Tensor, atol: float | None) -> float:
    return tolerance(x.dtype) if atol is None else atol


def check_finite(tree: Any, name: str = "value") -> Message:
    """Every floating tensor in ``tree`` is finite (no NaN, no inf)."""
    for leaf_name, leaf in named_leaves(tree, name):
        if isinstance(leaf, Tensor) and leaf.is_floating_point():
            bad = ~torch.isfinite(leaf.detach())
            if bad.any():
                return f"{leaf_name} is not finite: {_at(leaf.detach(), bad)}"
    return None


def check_unit_interval(x: Tensor, name: str = "value", atol: float | None = None) -> Message:
    """Every entry of ``x`` is finite and in ``[0, 1]`` (to ``atol``)."""
    if message := check_finite(x, name):
        return message
    x, atol = x.detach(), _atol(x, atol)
    if (low := x < -atol).any():
        return f"{name} is negative: {_at(x, low)}"
    if (high := x > 1 + atol).any():
        return f"{name} exceeds 1: {_at(x, high)}"
    return None


def check_distribution(
    weights: Tensor, name: str = "weights", atol: float | None = None, exact: bool = False
) -> Message:
    """``weights`` ``[..., N]`` are non-negative and each sums over its last axis to at most 1
    (to exactly 1 with ``exact=True``): a (sub-)distribution over the cells, as the DNC's read,
    write and allocation weightings are."""
    if message := check_finite(weights, name):
        return message
    w, atol = weights.detach(), _atol(weights, atol)
    if (negative := w < -atol).any():
        return f"{name} has a negative weight: {_at(w, negative)}"
    total = w.sum(-1)
    if (over := total > 1 + atol).any():
        return f"{name} sums to more than 1: {_at(total, over)}"
    if exact and (under := total < 1 - atol).any():
        return f"{name} sums to less than 1: {_at(total, under)}"
    return None


def check_allocation(allocation: Tensor, atol: float | None = None) -> Message:
    """Allocation weights ``[..., N]``: each in ``[0, 1]``, summing to at most 1."""
    return check_unit_interval(allocation, "allocation", atol) or check_distribution(allocation, "allocation", atol)


def check_link_matrix(link: Tensor, name: str = "link_matrix", atol: float | None = None) -> Message:
    """A dense link matrix ``[..., N, N]``: entries in ``[0, 1]``, a zero diagonal (a cell never
    follows itself), every row and every column summing to at most 1."""
    if message := check_unit_interval(link, name, atol):
        return message
    link, atol = link.detach(), _atol(link, atol)
    diagonal = torch.diagonal(link, dim1=-2, dim2=-1)
    if (nonzero := diagonal.abs() > atol).any():
        return f"{name} has a non-zero diagonal (a cell follows itself): {_at(diagonal, nonzero)}"
    for axis, what in ((-1, "row"), (-2, "column")):
        total = link.sum(axis)
        if (over := total > 1 + atol).any():
            return f"a {what} of {name} sums to more than 1: {_at(total, over)}"
    return None


def check_sparse_link_matrix(
    values: Tensor, positions: Tensor, name: str = "link_matrix", atol: float | None = None
) -> Message:
    """One L-sparse view of a link matrix (the SDNC's): row ``i`` holds ``values[i]`` ``[L]`` at the
    columns ``positions[i]``. Entries in ``[0, 1]``, none on the diagonal (``positions[i] == i``
    must hold 0), every row summing to at most 1. (The columns of ``L`` are the rows of the
    transposed view, checked on that view.)"""
    if message := check_unit_interval(values, name, atol):
        return message
    values, atol = values.detach(), _atol(values, atol)
    rows = torch.arange(values.shape[-2], device=values.device).unsqueeze(-1)
    if (self_link := (positions == rows) & (values.abs() > atol)).any():
        i = _first(self_link)
        return f"{name} links cell {i[-2]} to itself with weight {values[i].item():.6g} (a non-zero diagonal)"
    total = values.sum(-1)
    if (over := total > 1 + atol).any():
        return f"a row of {name} sums to more than 1: {_at(total, over)}"
    return None


def check_access_stamps(last_access: Tensor, time: Tensor) -> Message:
    """SAM-style usage stamps: every cell's last access lies in ``[0, time]``."""
    if (bad := (last_access < 0) | (last_access > time.unsqueeze(-1))).any():
        i = _first(bad)
        return f"last_access {last_access[i].item()} of cell {i[-1]} is outside [0, time={time.max().item()}]"
    return None


def _dense_links(state: Any) -> bool:
    return "link_positions" not in state._fields


#: State invariants by name: the fields a state needs for each, and its check ``(state, atol) -> Message``.
#: Fields are matched by name, so a memory of your own gets these checks by naming its fields like
#: memfn's (``usage_vector``, ``read_weights``, ``write_weights``, ``precedence``, ``link_matrix``...).
STATE_INVARIANTS: dict[str, tuple[tuple[str, ...], Callable[[Any, float | None], Message]]] = {
    "usage_in_unit_interval": (
        ("usage_vector",),
        lambda s, atol: check_unit_interval(s.usage_vector, "usage_vector", atol),
    ),
    "access_stamps_in_range": (("last_access", "time"), lambda s, atol: check_access_stamps(s.last_access, s.time)),
    "read_weights_are_distributions": (
        ("read_weights",),
        lambda s, atol: check_distribution(s.read_weights, "read_weights", atol),
    ),
    "write_weights_are_distributions": (
        ("write_weights",),
        lambda s, atol: check_distribution(s.write_weights, "write_weights", atol),
    ),
    "precedence_is_a_distribution": (
        ("precedence",),
        lambda s, atol: check_distribution(s.precedence, "precedence", atol),
    ),
    "link_matrix_is_valid": (
        ("link_matrix",),
        lambda s, atol: (
            check_link_matrix(s.link_matrix, "link_matrix", atol)
            if _dense_links(s)
            else check_sparse_link_matrix(s.link_matrix, s.link_positions, "link_matrix", atol)
            or (
                check_sparse_link_matrix(s.rev_link_matrix, s.rev_link_positions, "rev_link_matrix", atol)
                if "rev_link_matrix" in s._fields
                else None
            )
        ),
    ),
}


def applicable(fields: tuple[str, ...], needed: tuple[str, ...]) -> bool:
    return set(needed) <= set(fields)


def check_state(state: Any, atol: float | None = None) -> list[str]:
    """Every :data:`STATE_INVARIANTS` check that ``state``'s fields allow; the messages of those that fail."""
    fields = getattr(state, "_fields", ())
    found = (check(state, atol) for needed, check in STATE_INVARIANTS.values() if applicable(fields, needed))
    return [m for m in found if m]


def check_sparse_rows_changed(before: Any, after: Any) -> Message:
    """A sparse step (SAM, SDNC) changes only memory rows among its write slots ``after.write_positions``,
    and at most ``R * P + 1`` of them (``read_positions`` ``[R, P]``: the cells read at the previous
    step and the least-recently-used cell)."""
    rows = set((before.memory != after.memory).any(-1).nonzero().flatten().tolist())
    slots = set(after.write_positions.flatten().tolist())
    bound = before.read_positions.numel() + 1
    if not rows <= slots:
        return f"the step changed memory rows {sorted(rows - slots)} outside its write positions {sorted(slots)}"
    if len(rows) > bound or len(slots) > bound:
        what = f"changed {len(rows)} rows" if len(rows) > bound else f"has {len(slots)} write positions"
        return f"the step {what}: more than R * P + 1 = {bound}"
    return None


def check_structure(before: Any, after: Any, reads: Tensor, read_size: int) -> Message:
    """``step`` returned a state of the same pytree structure, shapes and dtypes as it was given
    (what ``vmap``, ``torch.compile`` and a time loop rely on), and ``read_size`` read values."""
    if optree.tree_structure(after) != optree.tree_structure(before):
        return f"the new state's structure {optree.tree_structure(after)} differs from {optree.tree_structure(before)}"
    for (name, a), (_, b) in zip(named_leaves(after, "state"), named_leaves(before, "state")):
        if not isinstance(a, Tensor):
            return f"{name} is a {type(a).__name__}, not a tensor (it breaks vmap and recompiles torch.compile)"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{name} changed from {tuple(b.shape)} {b.dtype} to {tuple(a.shape)} {a.dtype}"
    if not isinstance(reads, Tensor) or reads.numel() != read_size:
        shape = tuple(reads.shape) if isinstance(reads, Tensor) else type(reads).__name__
        return f"the read vectors have shape {shape}, not read_size={read_size} values"
    return None


def snapshot(tree: Any) -> list[tuple[str, Tensor, int]]:
    """``(name, copy, version)`` of every tensor in ``tree``: what :func:`check_unchanged` compares with."""
    return [(n, t.detach().clone(), t._version) for n, t in named_leaves(tree) if isinstance(t, Tensor)]


def check_unchanged(saved: list[tuple[str, Tensor, int]], tree: Any, name: str = "state") -> Message:
    """No tensor of ``tree`` was written since :func:`snapshot` (neither its values nor, through an
    in-place op, its version counter changed)."""
    current = [t for _, t in named_leaves(tree) if isinstance(t, Tensor)]
    for (leaf, copy, version), now in zip(saved, current):
        label = f"{name}.{leaf}" if leaf else name
        if now._version != version:
            return f"{label} was modified in place (its version counter went from {version} to {now._version})"
        if not torch.equal(now.detach(), copy) and not (copy.isnan() & now.isnan()).any():
            return f"{label} changed"
    return None


def compare_trees(actual: Any, expected: Any, what: str, rtol: float, atol: float) -> Message:
    """``actual`` equals ``expected`` leaf by leaf (floats to ``rtol``/``atol``, integers exactly)."""
    if optree.tree_structure(actual) != optree.tree_structure(expected):
        return f"{what}: the structures differ"
    for (name, a), (_, e) in zip(named_leaves(actual, "output"), named_leaves(expected, "output")):
        if a.shape != e.shape or a.dtype != e.dtype:
            return f"{what}: {name} is {tuple(a.shape)} {a.dtype}, expected {tuple(e.shape)} {e.dtype}"
        if a.is_floating_point():
            close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        else:
            close = a == e
        if not close.all():
            i = _first(~close)
            return f"{what}: {name}{list(i)} is {a[i].item():.8g}, expected {e[i].item():.8g}"
    return None


__all__ = [
    "STATE_INVARIANTS",
    "Message",
    "check_access_stamps",
    "check_allocation",
    "check_distribution",
    "check_finite",
    "check_link_matrix",
    "check_sparse_link_matrix",
    "check_sparse_rows_changed",
    "check_state",
    "check_structure",
    "check_unchanged",
    "check_unit_interval",
    "compare_trees",
    "named_leaves",
    "snapshot",
    "tolerance",
]
