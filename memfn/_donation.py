"""Buffer donation of the SAM/SDNC fast path, tied to the storage rather than to a tensor object.

A fast-path call takes over the big buffers of the state it is given (memory, SDNC link tables)
and updates them in place. Every tensor on such a buffer (``memfn.detach``, ``.data``, a view, the
unwrapped tensor of a ``torch.func`` transform) sees the new contents, so only the state the call
returned may be used with it again. The mark therefore sits on the storage: its Python object is
kept alive by torch for as long as the storage lives, and holds a weak reference to the ``time``
storage of the state that owns the buffer now. A state whose buffer is marked for another ``time``
is stale: :func:`check_not_consumed` refuses it.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

#: Attribute on a donated buffer's ``UntypedStorage``: a weak reference to the owner's ``time`` storage.
OWNER = "_memfn_owner"
#: The fields of a SAM/SDNC state a fast-path call takes over (the SDNC's link tables as well).
DONATED_FIELDS = ("memory", "link_matrix", "link_positions", "rev_link_matrix", "rev_link_positions")

CONSUMED = (
    "was consumed by an earlier forward call: the SAM/SDNC fast path updates the memory in place and "
    "takes over the buffers of the state passed in (like JAX buffer donation), and this state (or a "
    "copy of it made with detach, .data or a view) still points at them. Pass memfn.clone(hidden) to "
    "keep a state you want to reuse, or build the module with fast=False"
)


def storage_of(tensor: Tensor) -> torch.UntypedStorage | None:
    """The storage under ``tensor`` (through ``torch.func`` wrappers); ``None`` where there is none
    (a fake tensor while tracing, a tensor subclass without storage)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None


def _donated(state: Any) -> list[tuple[str, Tensor]]:
    return [(f, getattr(state, f)) for f in DONATED_FIELDS if isinstance(getattr(state, f, None), Tensor)]


def was_donated(tensor: Tensor) -> bool:
    """Whether ``tensor`` is the very object a fast-path call emptied when it took its buffer."""
    return bool(getattr(tensor, "_memfn_donated", False))


def check_not_consumed(state: Any, name: str = "state") -> None:
    """Raise ``ValueError`` if a buffer of ``state`` was taken over by a fast-path call that did not
    start from this very state (its ``time`` tensor, or one sharing its storage)."""
    if torch.compiler.is_compiling():
        return
    time = getattr(state, "time", None)
    time_storage = storage_of(time) if isinstance(time, Tensor) else None
    for field, tensor in _donated(state):
        if was_donated(tensor):
            raise ValueError(f"{name}.{field} {CONSUMED}")
        storage = storage_of(tensor)
        owner = getattr(storage, OWNER, None) if storage is not None else None
        if owner is not None and (time_storage is None or owner() is not time_storage):
            raise ValueError(f"{name}.{field} {CONSUMED}")


def donate(tensor: Tensor) -> Tensor:
    """Take ``tensor``'s storage for an in-place buffer and empty the object passed in, so that the
    plain reuse fails early (aliases are caught by the mark :func:`hand_over` leaves on the storage).
    Tensors that require grad (e.g. a learned initial memory) or are not contiguous are copied."""
    if tensor.requires_grad or not tensor.is_contiguous():
        return tensor.detach().clone()
    buffer = tensor.detach()
    storage = storage_of(buffer)
    if storage is not None:  # taken: no state owns it until the call hands it over
        setattr(storage, OWNER, _NOBODY)
    with torch.no_grad():
        tensor.set_()  # type: ignore[call-overload]  # torch's stubs lack set_()'s no-argument form
    tensor._memfn_donated = True  # type: ignore[attr-defined]
    return buffer


def hand_over(state: Any) -> None:
    """Mark the donated buffers of ``state`` (a fast-path call's final state) as owned by it."""
    time_storage = storage_of(state.time)
    if time_storage is None:
        return
    owner = weakref.ref(time_storage)
    for _, tensor in _donated(state):
        storage = storage_of(tensor)
        if storage is not None:
            setattr(storage, OWNER, owner)


def _nobody() -> None:
    return None


#: The mark of a buffer taken by a call that has not returned (or failed): no state may use it.
_NOBODY = _nobody
