"""Write tests/data/dnc_reference.pt: float64 outputs of the dense DNC before issue 18's options.

Run once (``python -m tests.data.make_dnc_reference`` from the repository root), on the code before
the options were added (commit 7de3c19); tests/test_improved_dnc.py asserts that the defaults still
give these numbers (to 1e-12: other CPUs sum in another order).
"""

from __future__ import annotations

from pathlib import Path

import torch

import memfn
from tests.data.stored import record_pure_steps


def reference() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for seed, (n, w, r) in enumerate([(6, 4, 1), (9, 5, 3)]):
        record_pure_steps(out, f"pure{seed}", memfn.dnc(nr_cells=n, cell_size=w, read_heads=r), 8, seed)
    torch.manual_seed(0)
    rnn = memfn.DNC(input_size=5, hidden_size=8, nr_cells=6, cell_size=4, read_heads=2).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    y, (_, mhx, rv) = rnn(x)
    y.sum().backward()
    out["shell.x"] = x
    out["shell.y"] = y.detach()
    out["shell.rv"] = rv.detach()
    out["shell.memory"] = mhx["memory"].detach()
    out["shell.link_matrix"] = mhx["link_matrix"].detach()
    out["shell.grad_interface"] = rnn.interfaces[0].weight.grad.detach()
    return out


if __name__ == "__main__":
    torch.save(reference(), Path(__file__).with_name("dnc_reference.pt"))
