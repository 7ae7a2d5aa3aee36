"""What memfn asks of the running torch beyond its public API, in one place."""

from __future__ import annotations

import torch


def in_functorch_transform() -> bool:
    """Whether a ``torch.func`` transform (``vmap`` over an ensemble, ``grad``) is running here.

    torch has no public query for it; this private one exists in every torch memfn supports
    (>= 2.4), and is called directly so that a rename fails loudly (tests/test_transforms.py)."""
    return bool(torch._C._are_functorch_transforms_active())
