"""Build a dense interface vector ``xi`` from named fields given as pre-activation logits."""

from __future__ import annotations

import torch

from memfn.interface import interface_field_sizes

FIELDS = (
    "read_keys",
    "read_strengths",
    "write_key",
    "write_strength",
    "erase_vector",
    "write_vector",
    "free_gates",
    "allocation_gate",
    "write_gate",
    "read_modes",
)
ON, OFF = 30.0, -30.0  # logits that saturate a sigmoid / softmax


def make_xi(read_heads: int, cell_size: int, dtype=torch.float64, **fields) -> torch.Tensor:
    """``xi`` with every field zero (pre-activation) except those given; values broadcast."""
    parts = []
    for name, size in zip(FIELDS, interface_field_sizes(read_heads, cell_size)):
        value = torch.as_tensor(fields.pop(name, 0.0), dtype=dtype)
        parts.append(value.reshape(-1).expand(size) if value.numel() == 1 else value.reshape(size))
    if fields:
        raise TypeError(f"unknown fields {sorted(fields)}")
    return torch.cat(parts)


def read_mode_logits(read_heads: int, mode: int) -> torch.Tensor:
    """Logits selecting one read mode (0 backward, 1 forward, 2 content) for every head."""
    logits = torch.full((read_heads, 3), OFF, dtype=torch.float64)
    logits[:, mode] = ON
    return logits
