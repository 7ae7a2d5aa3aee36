"""What the state checks at the pure API's boundary cost: step time with and without them, side by side.

    python benchmarks/validation_overhead.py [--batch 8 --cells 64 --repeats 200]

A public ``step`` (``memfn.dnc(...).step``, ``memfn.sam(...).step``, ``memfn.sdnc(...).step``,
``memory_cell(...).step``) checks the state it is given (structure, shapes, dtypes; for SAM/SDNC
also that no fast-path call consumed its buffers) and then runs the step; ``memfn.unchecked``
gives the step without the check. ``run`` and the shells check once per call and then run the
unchecked step every time step. Prints the median microseconds per call of both, measured
in this one run (forward only, no gradients, eager), and what the check alone takes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

import memfn
from memfn import unchecked


def row(name: str, checked, plain, check, repeats: int) -> str:
    """Medians of ``checked()`` and ``plain()`` timed alternately (drift on a shared machine hits both
    alike), and of ``check()`` alone: the difference of two noisy medians can be off by more than
    the check itself costs."""
    with torch.no_grad():
        for fn in (checked, plain, check):
            fn()
        times: dict[str, list[float]] = {"checked": [], "plain": [], "check": []}
        for _ in range(repeats):
            for key, fn in (("checked", checked), ("plain", plain), ("check", check)):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    a, b, c = (statistics.median(times[k]) * 1e6 for k in ("checked", "plain", "check"))
    return f"| {name} | {a:.1f} | {b:.1f} | {c:.1f} ({c / b:.2%}) |"


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
    print("| call | with check (us) | without (us) | the check alone (us, share of the call) |")
    print("|---|---|---|---|")
    for name, mem in memories.items():
        state = memfn.batch_state(mem.init(), b)
        xi = torch.randn(b, mem.interface_size)
        print(row(f"`{name}(...).step`", partial(mem.step, state, xi), partial(unchecked(mem.step), state, xi),
                  partial(mem.check, state), args.repeats))  # fmt: skip
    for name, mem in memories.items():
        cell = memfn.memory_cell(memfn.lstm(8 + mem.read_size, args.hidden, num_layers=2), mem, 8, 8)
        params, state = cell.init_params(), memfn.batch_state(cell.init_state(), b)
        x = torch.randn(b, 8)
        check = partial(cell.check, params, state)
        print(row(f"cell step ({name})", partial(cell.step, params, state, x),
                  partial(unchecked(cell.step), params, state, x), check, args.repeats))  # fmt: skip
        step = memfn.batched_step(cell, use_vmap=False)
        bare = partial(step)  # no .cell attribute: run() cannot check
        xs = torch.randn(args.steps, b, 8)
        print(row(f"`run`, {args.steps} steps ({name})", partial(memfn.run, step, params, state, xs),
                  partial(memfn.run, bare, params, state, xs), check, max(args.repeats // 10, 5)))  # fmt: skip


if __name__ == "__main__":
    main()
