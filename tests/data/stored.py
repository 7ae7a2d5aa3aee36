"""Compare numbers computed now with float64 reference numbers stored in this folder."""

from __future__ import annotations

from pathlib import Path

import torch

import memfn


def assert_stored_numbers(file_name: str, now: dict[str, torch.Tensor]) -> None:
    """``now`` equals the tensors stored in ``tests/data/<file_name>``, key by key, to 1e-12.

    The numbers were stored on another CPU: BLAS picks its kernels (and so its summation order) by
    instruction set, so float64 agrees to a few ulps across machines, not bit for bit. A changed
    formula moves them by far more than 1e-13.
    """
    stored = torch.load(Path(__file__).with_name(file_name), weights_only=True)
    assert stored.keys() == now.keys()
    for key in stored:
        torch.testing.assert_close(now[key], stored[key], rtol=1e-12, atol=1e-13, msg=key)


def record_pure_steps(out: dict[str, torch.Tensor], prefix: str, mem: memfn.Memory, steps: int, seed: int) -> None:
    """Run ``mem`` for ``steps`` steps of random float64 interfaces (``seed``) from its zero state and
    put the interfaces, the stacked reads and the final state's fields into ``out`` under ``prefix``."""
    g = torch.Generator().manual_seed(seed)
    state = mem.init(torch.float64)
    xis = torch.randn(steps, mem.interface_size, generator=g, dtype=torch.float64) * 2
    out[f"{prefix}.xi"] = xis
    reads = []
    for xi in xis:
        rv, state = mem.step(state, xi)
        reads.append(rv)
    out[f"{prefix}.reads"] = torch.stack(reads)
    for name, t in state._asdict().items():
        out[f"{prefix}.{name}"] = t
