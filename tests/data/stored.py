"""Compare numbers computed now with float64 reference numbers stored in this folder."""

from __future__ import annotations

from pathlib import Path

import torch


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
