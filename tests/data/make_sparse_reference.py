"""Write tests/data/sparse_reference.pt: float64 outputs of SAM and SDNC before issue 18's options.

Run once (``python -m tests.data.make_sparse_reference`` from the repository root), on the code
before the options were added (commit 478fd0d); tests/test_improved_sparse.py
asserts that the defaults still give these numbers (to 1e-12: other CPUs sum in another order).
Exact k-NN search (``knn="exact"``) throughout: it is deterministic and needs no faiss.
"""

from __future__ import annotations

from pathlib import Path

import torch

import memfn
from tests.data.stored import record_pure_steps


def reference() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    memories = {
        "sam": lambda: memfn.sam(nr_cells=12, cell_size=4, read_heads=2, sparse_reads=3, knn="exact"),
        "sdnc": lambda: memfn.sdnc(nr_cells=12, cell_size=4, read_heads=2, sparse_reads=3, temporal_reads=2,
                                   knn="exact"),
    }  # fmt: skip
    for seed, (kind, make) in enumerate(memories.items()):
        record_pure_steps(out, kind, make(), 10, seed)
    shells = {
        "SAM": lambda: memfn.SAM(input_size=5, hidden_size=8, nr_cells=10, cell_size=4, read_heads=2,
                                 sparse_reads=3, knn="exact"),
        "SDNC": lambda: memfn.SDNC(input_size=5, hidden_size=8, nr_cells=10, cell_size=4, read_heads=2,
                                   sparse_reads=3, temporal_reads=2, knn="exact"),
    }  # fmt: skip
    for kind, make in shells.items():
        torch.manual_seed(0)
        rnn = make().double()
        x = torch.randn(3, 7, 5, dtype=torch.float64)
        y, (_, mhx, rv) = rnn(x)
        y.sum().backward()
        out[f"{kind}.x"] = x
        out[f"{kind}.y"] = y.detach()
        out[f"{kind}.rv"] = rv.detach()
        out[f"{kind}.memory"] = mhx["memory"].detach()
        out[f"{kind}.read_positions"] = mhx["read_positions"]
        out[f"{kind}.grad_interface"] = rnn.interfaces[0].weight.grad.detach()
    return out


if __name__ == "__main__":
    torch.save(reference(), Path(__file__).with_name("sparse_reference.pt"))
