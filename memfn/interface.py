"""The controller-to-memory contract of the dense DNC: the flat interface vector ``xi``.

Layout of ``xi`` (Graves et al. 2016, Methods, "Interface parameters"), in this order:

| field                | length    | activation                                                    |
|----------------------|-----------|---------------------------------------------------------------|
| read keys ``k^r``    | ``R * W`` | none (raw, as in the paper)                                   |
| read strengths       | ``R``     | ``oneplus``                                                   |
| write key ``k^w``    | ``W``     | none                                                          |
| write strength       | ``1``     | ``oneplus``                                                   |
| erase vector ``e``   | ``W``     | sigmoid                                                       |
| write vector ``v``   | ``W``     | none                                                          |
| free gates ``f``     | ``R``     | sigmoid                                                       |
| allocation gate      | ``1``     | sigmoid                                                       |
| write gate           | ``1``     | sigmoid                                                       |
| read modes ``pi``    | ``3 * R`` | softmax over the 3 modes, ordered (backward, forward, content) |
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from memfn.numerics import oneplus

#: Index of each read mode in the last axis of ``read_modes``.
BACKWARD, FORWARD, CONTENT = 0, 1, 2
NUM_READ_MODES = 3


class DNCInterface(NamedTuple):
    """The parsed, activated interface of one time step (shapes for one example).

    Fields: ``read_keys`` ``[R, W]``, ``read_strengths`` ``[R]``, ``write_key`` ``[1, W]``,
    ``write_strength`` ``[1]``, ``erase_vector`` ``[W]``, ``write_vector`` ``[W]``, ``free_gates``
    ``[R]``, ``allocation_gate`` ``[1]``, ``write_gate`` ``[1]``, ``read_modes`` ``[R, 3]``
    (backward, forward, content). Built by :func:`split_dnc_interface`.

    Examples:
        >>> io = memfn.split_dnc_interface(torch.zeros(2, 53), read_heads=2, cell_size=8)  # a batch of 2
        >>> io.write_key.shape, io.read_modes[0, 0]  # softmax of zeros: each mode 1/3
        (torch.Size([2, 1, 8]), tensor([0.3333, 0.3333, 0.3333]))
    """

    read_keys: Tensor  # [R, W]
    read_strengths: Tensor  # [R]
    write_key: Tensor  # [1, W]
    write_strength: Tensor  # [1]
    erase_vector: Tensor  # [W]
    write_vector: Tensor  # [W]
    free_gates: Tensor  # [R]
    allocation_gate: Tensor  # [1]
    write_gate: Tensor  # [1]
    read_modes: Tensor  # [R, 3] (backward, forward, content)


def interface_field_sizes(read_heads: int, cell_size: int) -> list[int]:
    """Length of each :class:`DNCInterface` field in ``xi``, in order."""
    r, w = read_heads, cell_size
    return [r * w, r, w, 1, w, w, r, 1, 1, NUM_READ_MODES * r]


def dnc_interface_size(read_heads: int, cell_size: int) -> int:
    """Length of ``xi`` for a dense DNC: ``R*W + 3W + 5R + 3``.

    Examples:
        >>> memfn.dnc_interface_size(read_heads=2, cell_size=8)
        53
    """
    return sum(interface_field_sizes(read_heads, cell_size))


def check_interface(xi: Tensor, interface_size: int) -> None:
    """Raise ``ValueError`` unless ``xi`` is a floating tensor whose last axis has ``interface_size``."""
    if not isinstance(xi, Tensor):
        raise ValueError(f"xi must be a torch.Tensor, got {type(xi).__name__}")
    if not xi.is_floating_point():
        raise ValueError(f"xi must have a floating dtype, got dtype={xi.dtype}")
    if xi.ndim < 1 or xi.shape[-1] != interface_size:
        raise ValueError(
            f"xi must have length interface_size={interface_size} in its last axis, got shape {tuple(xi.shape)}"
        )


def split_dnc_interface(xi: Tensor, read_heads: int, cell_size: int) -> DNCInterface:
    """Split and activate ``xi`` ``[..., interface_size]`` into a :class:`DNCInterface`.

    Examples:
        >>> io = memfn.split_dnc_interface(torch.zeros(53), read_heads=2, cell_size=8)
        >>> io.read_keys.shape, io.read_modes.shape, io.write_gate  # sigmoid(0)
        (torch.Size([2, 8]), torch.Size([2, 3]), tensor([0.5000]))
    """
    r, w = read_heads, cell_size
    lead = xi.shape[:-1]
    parts = torch.split(xi, interface_field_sizes(r, w), dim=-1)
    keys, strengths, wkey, wstrength, erase, write, free, alloc, wgate, modes = parts
    return DNCInterface(
        read_keys=keys.reshape(*lead, r, w),
        read_strengths=oneplus(strengths),
        write_key=wkey.reshape(*lead, 1, w),
        write_strength=oneplus(wstrength),
        erase_vector=torch.sigmoid(erase),
        write_vector=write,
        free_gates=torch.sigmoid(free),
        allocation_gate=torch.sigmoid(alloc),
        write_gate=torch.sigmoid(wgate),
        read_modes=torch.softmax(modes.reshape(*lead, r, NUM_READ_MODES), dim=-1),
    )


__all__ = [
    "BACKWARD",
    "CONTENT",
    "DNCInterface",
    "FORWARD",
    "NUM_READ_MODES",
    "check_interface",
    "dnc_interface_size",
    "interface_field_sizes",
    "split_dnc_interface",
]
