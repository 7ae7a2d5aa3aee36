"""Time one batched DNC step (memory alone, and the full cell) eager vs compiled.

    python benchmarks/step_time.py [--batch 32 --cells 64 --width 32 --heads 4]

Prints milliseconds per step, forward and forward+backward, for: eager vmap, eager broadcasting
(no vmap: the core accepts leading batch axes), and ``torch.compile(vmap(step))``; ratios are
against eager vmap, measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optree
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import first_call_seconds, median_seconds  # noqa: E402

import memfn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cells", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)

    mem = memfn.dnc(nr_cells=args.cells, cell_size=args.width, read_heads=args.heads)
    cell = memfn.memory_cell(memfn.lstm(8 + mem.read_size, args.hidden, num_layers=2), mem, 8, 8)
    params = {k: v.requires_grad_() for k, v in cell.init_params().items()}
    b = args.batch
    mstate = memfn.batch_state(mem.init(), b)
    _, mstate = torch.func.vmap(mem.step)(mstate, torch.randn(b, mem.interface_size))  # non-trivial state
    xi = torch.randn(b, mem.interface_size, requires_grad=True)
    cstate = memfn.batch_state(cell.init_state(), b)
    x = torch.randn(b, 8)

    def memory_loss(step):
        reads, new = step(mstate, xi)
        return reads.sum() + sum(t.sum() for t in optree.tree_leaves(new))

    def cell_loss(step):
        y, new = step(params, cstate, x)
        return y.sum() + new.read_vectors.sum()

    variants = {
        "memory step": (
            memory_loss,
            {
                "eager vmap": torch.func.vmap(mem.step),
                "eager broadcast": mem.step,
                "compiled vmap": torch.compile(torch.func.vmap(mem.step), fullgraph=True),
            },
        ),
        f"cell step (LSTM 2x{args.hidden})": (
            cell_loss,
            {
                "eager vmap": memfn.batched_step(cell),
                "eager broadcast": memfn.batched_step(cell, use_vmap=False),
                "compiled vmap": memfn.batched_step(cell, compile=True, fullgraph=True),
            },
        ),
    }
    print(
        f"B={b} N={args.cells} W={args.width} R={args.heads}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; ms per step (median of {args.repeats})"
    )
    print(
        f"{'what':28s} {'variant':16s} {'fwd ms':>8s} {'fwd+bwd ms':>11s} "
        f"{'fwd x':>6s} {'f+b x':>6s} {'1st call s':>10s}"
    )
    for what, (loss, steps) in variants.items():
        base = None
        for name, step in steps.items():
            forward = lambda loss=loss, step=step: loss(step)
            backward = lambda loss=loss, step=step: loss(step).backward()
            first = first_call_seconds(backward)
            with torch.no_grad():
                fwd = median_seconds(forward, args.repeats)
            fb = median_seconds(backward, args.repeats)
            base = base or (fwd, fb)
            print(
                f"{what:28s} {name:16s} {fwd * 1e3:8.3f} {fb * 1e3:11.3f} "
                f"{base[0] / fwd:6.2f} {base[1] / fb:6.2f} {first:10.2f}"
            )


if __name__ == "__main__":
    main()
