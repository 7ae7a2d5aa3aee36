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

Options of :func:`memfn.dnc` (issue 18) change it as follows; the defaults give exactly the table above.

- ``write_heads=Wh > 1`` (deepmind/dnc's ``num_writes``): the write fields repeat per head, in
  place: write keys ``Wh * W``, write strengths ``Wh``, erase vectors ``Wh * W``, write vectors
  ``Wh * W``, allocation gates ``Wh``, write gates ``Wh``; the read modes become ``(2 Wh + 1) * R``,
  per head ordered (backward through write head 0..Wh-1, forward through 0..Wh-1, content).
- ``masking=True`` appends read masks ``R * W`` and write masks ``Wh * W`` (sigmoid).
- ``link_sharpness=True`` appends ``2 * R`` sharpness exponents, forward then backward per read
  head (``oneplus``).
- ``deallocation=True`` adds no field (it reuses the free gates).
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
    (backward, forward, content). Built by :func:`split_dnc_interface`. With ``write_heads=Wh > 1``
    the write fields get a leading head axis (``write_key`` ``[Wh, W]``, ``erase_vector`` and
    ``write_vector`` ``[Wh, W]``, gates ``[Wh]``) and ``read_modes`` is ``[R, 2 Wh + 1]``. The last
    four fields are ``None`` unless the option that needs them is on (``read_masks`` ``[R, W]``,
    ``write_masks`` ``[Wh, W]``, ``forward_sharpness`` and ``backward_sharpness`` ``[R]``).

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
    read_modes: Tensor  # [R, 3] (backward, forward, content); [R, 2 Wh + 1] with several write heads
    read_masks: Tensor | None = None  # [R, W] with masking
    write_masks: Tensor | None = None  # [Wh, W] with masking
    forward_sharpness: Tensor | None = None  # [R] with link_sharpness
    backward_sharpness: Tensor | None = None  # [R] with link_sharpness


def interface_layout(
    read_heads: int, cell_size: int, write_heads: int = 1, masking: bool = False, link_sharpness: bool = False
) -> tuple[tuple[str, int], ...]:
    """``(name, length)`` of each field of ``xi``, in order (the module docstring's table).

    Examples:
        >>> memfn.interface.interface_layout(read_heads=1, cell_size=2, link_sharpness=True)[-2:]
        (('forward_sharpness', 1), ('backward_sharpness', 1))
    """
    r, w, h = read_heads, cell_size, write_heads
    layout = [
        ("read_keys", r * w), ("read_strengths", r), ("write_key", h * w), ("write_strength", h),
        ("erase_vector", h * w), ("write_vector", h * w), ("free_gates", r), ("allocation_gate", h),
        ("write_gate", h), ("read_modes", (2 * h + 1) * r),
    ]  # fmt: skip
    if masking:
        layout += [("read_masks", r * w), ("write_masks", h * w)]
    if link_sharpness:
        layout += [("forward_sharpness", r), ("backward_sharpness", r)]
    return tuple(layout)


def interface_field_sizes(
    read_heads: int, cell_size: int, write_heads: int = 1, masking: bool = False, link_sharpness: bool = False
) -> list[int]:
    """Length of each field of ``xi`` present with these options, in order."""
    return [size for _, size in interface_layout(read_heads, cell_size, write_heads, masking, link_sharpness)]


def dnc_interface_size(
    read_heads: int, cell_size: int, write_heads: int = 1, masking: bool = False, link_sharpness: bool = False
) -> int:
    """Length of ``xi`` for a dense DNC: ``R*W + 3W + 5R + 3`` with the default options.

    Examples:
        >>> memfn.dnc_interface_size(read_heads=2, cell_size=8)
        53
    """
    return sum(interface_field_sizes(read_heads, cell_size, write_heads, masking, link_sharpness))


def interface_parts(xi: Tensor, fields: tuple[tuple[str, int], ...]) -> dict[str, Tensor]:
    """``xi`` ``[..., interface_size]`` cut into its raw (not activated) fields by name, ``fields``
    being ``(name, length)`` in order: :func:`interface_layout`'s, or a sparse memory's."""
    return dict(zip([name for name, _ in fields], torch.split(xi, [n for _, n in fields], dim=-1)))


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


def split_dnc_interface(
    xi: Tensor,
    read_heads: int,
    cell_size: int,
    write_heads: int = 1,
    masking: bool = False,
    link_sharpness: bool = False,
) -> DNCInterface:
    """Split and activate ``xi`` ``[..., interface_size]`` into a :class:`DNCInterface`.

    Examples:
        >>> io = memfn.split_dnc_interface(torch.zeros(53), read_heads=2, cell_size=8)
        >>> io.read_keys.shape, io.read_modes.shape, io.write_gate  # sigmoid(0)
        (torch.Size([2, 8]), torch.Size([2, 3]), tensor([0.5000]))
    """
    r, w, h = read_heads, cell_size, write_heads
    lead = xi.shape[:-1]
    p = interface_parts(xi, interface_layout(r, w, h, masking, link_sharpness))
    heads = (h, w) if h > 1 else (w,)  # one head: pytorch-dnc's shapes
    return DNCInterface(
        read_keys=p["read_keys"].reshape(*lead, r, w),
        read_strengths=oneplus(p["read_strengths"]),
        write_key=p["write_key"].reshape(*lead, h, w),
        write_strength=oneplus(p["write_strength"]),
        erase_vector=torch.sigmoid(p["erase_vector"]).reshape(*lead, *heads),
        write_vector=p["write_vector"].reshape(*lead, *heads),
        free_gates=torch.sigmoid(p["free_gates"]),
        allocation_gate=torch.sigmoid(p["allocation_gate"]),
        write_gate=torch.sigmoid(p["write_gate"]),
        read_modes=torch.softmax(p["read_modes"].reshape(*lead, r, 2 * h + 1), dim=-1),
        read_masks=torch.sigmoid(p["read_masks"]).reshape(*lead, r, w) if masking else None,
        write_masks=torch.sigmoid(p["write_masks"]).reshape(*lead, h, w) if masking else None,
        forward_sharpness=oneplus(p["forward_sharpness"]) if link_sharpness else None,
        backward_sharpness=oneplus(p["backward_sharpness"]) if link_sharpness else None,
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
    "interface_layout",
    "split_dnc_interface",
]
