"""Host resources: lazily zero-filled big tensors, and a memory check before a big allocation."""

from __future__ import annotations

import math
import weakref
from typing import TypeVar, cast

import numpy as np
import optree
import torch
from torch import Tensor

#: Above this size a CPU zero tensor is taken from ``calloc`` (via numpy): the OS hands out zero
#: pages lazily, so a huge, sparsely written memory costs nothing until its rows are touched.
LAZY_ZEROS_BYTES = 1 << 22

T = TypeVar("T")


#: The lazily zero-filled tensors :func:`zeros` made, with the version they had then: one still at
#: that version holds only zeros, so a batch of it can be lazily zero-filled too (see
#: :func:`batched_zeros_like`). A registry, not an attribute on the tensor: it cannot be copied
#: along by accident, and a write (which bumps ``_version``) takes a tensor out of it.
_LAZY: dict[int, tuple[weakref.ref[Tensor], int]] = {}  # id -> (the tensor, weakly; its version) (tensors
# cannot be weak dict keys: their == is elementwise)


def _forget(key: int) -> None:
    _LAZY.pop(key, None)


def zeros(*shape: int, dtype: torch.dtype, device: torch.device | str | None = None) -> Tensor:
    """``torch.zeros``, lazily zero-filled for large CPU tensors (so batching can keep it lazy)."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if (device is None or torch.device(device).type == "cpu") and nbytes >= LAZY_ZEROS_BYTES:
        # Bytes from calloc, viewed as the dtype (numpy has no bfloat16).
        out = torch.from_numpy(np.zeros(nbytes, dtype=np.uint8)).view(dtype).reshape(shape)
        key = id(out)
        _LAZY[key] = (weakref.ref(out, lambda _: _forget(key)), out._version)
        return out
    return torch.zeros(*shape, dtype=dtype, device=device)


def is_lazy_zeros(tensor: Tensor) -> bool:
    """Whether ``tensor`` came from :func:`zeros`' lazy branch and has not been written since."""
    entry = _LAZY.get(id(tensor))
    return entry is not None and entry[0]() is tensor and entry[1] == tensor._version


def batched(tensor: Tensor, batch_size: int) -> Tensor:
    """``tensor`` repeated along a new leading axis of ``batch_size``, as a new tensor; lazily
    zero-filled when ``tensor`` is (a million-cell memory costs nothing until rows are written)."""
    if is_lazy_zeros(tensor):
        return zeros(batch_size, *tensor.shape, dtype=tensor.dtype, device=tensor.device)
    return tensor.unsqueeze(0).expand(batch_size, *tensor.shape).contiguous()


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), or ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ensure_fits(nbytes: int, what: str, device: torch.device | str | None = None) -> None:
    """Raise ``MemoryError`` naming ``what`` and the size *before* allocating ``nbytes`` of CPU memory
    that is not available (the alternative is the kernel's OOM killer, or swapping for minutes)."""
    if device is not None and torch.device(device).type != "cpu":
        return
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB of memory is available; "
            "use fewer cells, a smaller batch or a narrower cell_size"
        )


def batched_tree(tree: T, batch_size: int, what: str, device: torch.device) -> T:
    """:func:`batched` on every tensor of one example's pytree (on ``device``), after
    :func:`ensure_fits` for the whole batch (``what`` names it in the error)."""
    leaves: list[Tensor] = optree.tree_leaves(tree)  # type: ignore[arg-type]  # any pytree of tensors
    nbytes = sum(t.numel() * t.element_size() for t in leaves) * batch_size
    ensure_fits(nbytes, what, device)
    return cast(T, optree.tree_map(lambda t: batched(t, batch_size), tree))  # type: ignore[arg-type]
