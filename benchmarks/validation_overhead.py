"""What the state checks at the pure API's boundary cost: step time with and without them, side by side.

    python benchmarks/validation_overhead.py [--batch 8 --cells 64 --repeats 200]

A public ``step`` (``memfn.dnc(...).step``, ``memfn.sam(...).step``, ``memfn.sdnc(...).step``,
``memory_cell(...).step``) checks the state it is given (structure, shapes, dtypes; for SAM/SDNC
also that no fast-path call consumed its buffers) and then runs the step; ``memfn.memory.unchecked``
gives the step without the check. ``run`` and the shells check once per call and then run the
unchecked step every time step. Prints microseconds per call for both and the difference, measured
in this one run (forward only, no gradients, eager).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds  # noqa: E402

import memfn  # noqa: E402
from memfn.memory import unchecked  # noqa: E402


def row(name: str, checked, plain, repeats: int) -> str:
    with torch.no_grad():
        # Interleave the two a few times: the machine is shared, and drift would bias one side.
        a, b = [], []
        for _ in range(3):
            a.append(median_seconds(checked, repeats))
            b.append(median_seconds(plain, repeats))
    with_check, without = min(a) * 1e6, min(b) * 1e6
    diff = with_check - without
    return f"| {name} | {with_check:.1f} | {without:.1f} | {diff:+.1f} ({diff / without:+.1%}) |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cells", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="time steps of the run() rows")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    b, n, w, r = args.batch, args.cells, args.width, args.heads
    memories = {
        "dnc": memfn.dnc(n, w, r),
        "sam": memfn.sam(n, w, r, sparse_reads=4),
        "sdnc": memfn.sdnc(n, w, r, sparse_reads=4, temporal_reads=2),
    }
    print(f"B={b}, N={n}, W={w}, R={r}, controller LSTM {args.hidden} x 2, {torch.get_num_threads()} thread(s)")
    print("| call | with check (us) | without (us) | check costs |")
    print("|---|---|---|---|")
    for name, mem in memories.items():
        state = memfn.batch_state(mem.init(), b)
        xi = torch.randn(b, mem.interface_size)
        print(row(f"`{name}(...).step`", partial(mem.step, state, xi), partial(unchecked(mem.step), state, xi),
                  args.repeats))  # fmt: skip
    for name, mem in memories.items():
        cell = memfn.memory_cell(memfn.lstm(8 + mem.read_size, args.hidden, num_layers=2), mem, 8, 8)
        params, state = cell.init_params(), memfn.batch_state(cell.init_state(), b)
        x = torch.randn(b, 8)
        print(row(f"cell step ({name})", partial(cell.step, params, state, x),
                  partial(unchecked(cell.step), params, state, x), args.repeats))  # fmt: skip
        step = memfn.batched_step(cell, use_vmap=False)
        bare = partial(step)  # no .cell attribute: run() cannot check
        xs = torch.randn(args.steps, b, 8)
        print(row(f"`run`, {args.steps} steps ({name})", partial(memfn.run, step, params, state, xs),
                  partial(memfn.run, bare, params, state, xs), max(args.repeats // 10, 5)))  # fmt: skip


if __name__ == "__main__":
    main()
