"""Write tests/data/dnc_reference.pt: float64 outputs of the dense DNC before issue 18's options.

Run once, on the code before the options were added (commit 7de3c19); tests/test_improved_dnc.py
asserts that the defaults still give these numbers exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch

import memfn


def reference() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for seed, (n, w, r) in enumerate([(6, 4, 1), (9, 5, 3)]):
        g = torch.Generator().manual_seed(seed)
        mem = memfn.dnc(nr_cells=n, cell_size=w, read_heads=r)
        state = mem.init(torch.float64)
        xis = torch.randn(8, mem.interface_size, generator=g, dtype=torch.float64) * 2
        out[f"pure{seed}.xi"] = xis
        reads = []
        for xi in xis:
            rv, state = mem.step(state, xi)
            reads.append(rv)
        out[f"pure{seed}.reads"] = torch.stack(reads)
        for name, t in state._asdict().items():
            out[f"pure{seed}.{name}"] = t
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
