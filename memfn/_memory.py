"""What every memory is: a pair of pure functions closed over a frozen config (optax style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from memfn._validation import check_same_dtype, check_state

F = TypeVar("F", bound=Callable[..., Any])


class Memory(NamedTuple):
    """A memory: ``init`` builds one example's state, ``step`` advances it by one time step.

    - ``init(dtype=torch.float32, device=None) -> state``: a NamedTuple of tensors, no batch axis.
    - ``step(state, xi) -> (read_vectors [R, W], new_state)``: pure; never mutates ``state``.
      ``xi`` is the flat interface vector ``[interface_size]``.
    - ``interface_size``: length of ``xi``; ``read_size``: ``R * W``, the flattened read vectors.
    - ``interface_fields``: ``(name, length)`` of each field of ``xi`` in order (used to build one
      linear per field, pytorch-dnc's ``independent_linears``); may be empty for custom memories.
    - ``config``: the memory's frozen configuration where something else needs it (the sparse
      memories' fast path, :mod:`memfn.sparse._fast`); ``None`` for custom memories.

    ``step`` and the functions it is made of also broadcast over leading batch axes, so it can be
    called on a batched state directly; ``torch.func.vmap(step)`` gives the same result.

    Examples:
        >>> mem = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2)
        >>> mem.interface_size, mem.read_size, mem.interface_fields[:2]
        (53, 16, (('read_keys', 16), ('read_strengths', 2)))
        >>> reads, state = mem.step(mem.init(), torch.randn(mem.interface_size))
        >>> batch = memfn.batch_state(mem.init(), 4)  # the same step on a batch, with or without vmap
        >>> reads, batch = torch.func.vmap(mem.step)(batch, torch.randn(4, mem.interface_size))
        >>> reads.shape
        torch.Size([4, 2, 8])
    """

    init: Callable[..., Any]
    step: Callable[[Any, Tensor], tuple[Tensor, Any]]
    interface_size: int
    read_size: int
    interface_fields: tuple[tuple[str, int], ...] = ()
    config: Any = None
    #: ``check(state, batch_shape=None, name="state")``: raise unless ``state`` fits this memory
    #: (structure, shapes, dtypes; see :func:`memfn._validation.check_state`). ``None``: unchecked.
    check: Callable[..., None] | None = None


def checked_memory(
    init: Callable[..., Any],
    step: Callable[[Any, Tensor], tuple[Tensor, Any]],
    interface_size: int,
    read_size: int,
    interface_fields: tuple[tuple[str, int], ...] = (),
    config: Any = None,
    extra_check: Callable[[Any, str], None] | None = None,
) -> Memory:
    """A :class:`Memory` whose public ``step`` checks the state it is given against ``init``'s (one
    example's state on the meta device, built once), then runs ``step``. ``extra_check(state, name)``
    adds a memory's own rule (the sparse memories': no consumed buffer)."""
    expected: list[Any] = []

    def check(state: Any, batch_shape: tuple[int, ...] | None = None, name: str = "state") -> None:
        if not expected:
            expected.append(init(device="meta"))
        check_state(state, expected[0], name, batch_shape)
        if extra_check is not None:
            extra_check(state, name)

    def checked_step(state: Any, xi: Tensor) -> tuple[Tensor, Any]:
        check(state)
        check_same_dtype("xi", xi, state)
        return step(state, xi)

    checked_step.__doc__ = step.__doc__
    checked_step.unchecked = step  # type: ignore[attr-defined]
    return Memory(init, checked_step, interface_size, read_size, interface_fields, config, check)


def unchecked(step: F) -> F:
    """The step a checked ``step`` wraps (what runs every time step after one check at the boundary);
    any other function (a user's own, or one replacing a checked step) as it is."""
    return getattr(step, "unchecked", step)


def default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype
