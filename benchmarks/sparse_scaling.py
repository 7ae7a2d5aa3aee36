"""SAM and SDNC at up to a million cells: per-step time, backprop memory and recall against N (issues 5, 14).

    python benchmarks/sparse_scaling.py                       # SAM 1,024 .. 1,048,576 cells, SDNC and DNC
    python benchmarks/sparse_scaling.py --cells 1024 65536 --models sam --json out.json
    python benchmarks/sparse_scaling.py --knn exact           # the O(N) oracle instead of the default

Config (issue 5): batch 8, cell_size 32, 4 read heads, 4 sparse reads (SDNC: 4 temporal reads),
one LSTM layer of 100 units, input 8, T=100, forward+backward of ``output.square().mean()``; the
shells' fast path (in-place rows, sparse backward) with the default arguments (``knn="auto"``:
exact top-k up to ``memfn.sparse.knn.AUTO_EXACT_MAX_CELLS`` cells, the maintained faiss IVF index above),
or ``--knn exact`` / ``--knn faiss`` (IVF at every N) to force one.

Each (model, N) runs in a fresh child process. Per child: build the module and the input, one
warm-up call, then the median over ``--repeats`` of two measurements:

- *fresh*: forward from a zero memory (``hx=None``) + backward, divided by T;
- *carried*: the hidden state carried from call to call (detached), so the memory keeps filling
  and the index is reused, as in training on one long stream.

"peak MB" is the child's peak RSS (``ru_maxrss``) minus its RSS after importing and building the
module, i.e. everything a forward+backward at that size needed. The target column is issue 5's
bound, 2 x the memory matrix (8 x N x 32 float32) + 500 MB. The dense DNC runs only where its
``T x B x N x N`` link matrices fit (``--dense-max-cells``); its time at larger N is not
extrapolated here. Ratios are measured side by side in this run.

Recall (SAM rows, ``--recall-fills``): recall@K of the model's own search (its knn setting, on the
fast path) against exact top-k as the memory fills. For each fill fraction f, a batch of
``--recall-batch`` memories gets Gaussian rows in a random fraction f of its cells (filling 2^20
cells by stepping would take 2^20 steps), the fast path takes ``--recall-steps`` steps on it (so
the index is the maintained one, updated row by row), then ``--recall-queries`` random keys per
example are searched both ways. Under the default ``auto``, N <= the crossover is exact (recall 1).

Measured (issue 14, ``python benchmarks/sparse_scaling.py --models sam``, default arguments, one
thread on a 2-core machine shared with other jobs; two runs, the timings are load-bound):

- crossover 8,192, load ~2: carried ms/step 14.3 at 2^10, 20.3 at 2^20 (1.42x; fresh 15.7 and
  16.5, 1.05x); peak 197 MB at 2^20 against the 2,548 MB target.
- crossover 16,384 (final), load ~7: carried 21.5 at 2^10, 55.0 at 2^20 (2.56x; fresh 20.0 and
  43.7, 2.19x; the noisiest row, 2^16, 3.24x); peak 201 MB at 2^20.

Recall@4 of the default against exact with random keys, by fraction written (1 %, 10 %, 50 %,
100 %): up to 2^14 exact (1.00), 2^16 1.00/0.86/0.69/0.69, 2^18 0.96/0.71/0.61/0.59, 2^20
0.78/0.64/0.58/0.55 (Gaussian rows and keys have no cluster structure: a hard case for an IVF
index probing 32 of up to 4,096 lists).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_CELLS = [1024, 4096, 16384, 65536, 262144, 1048576]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: dict) -> dict:
    import torch

    import memfn

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    b, t, n = spec["batch"], spec["time"], spec["cells"]
    common = dict(input_size=8, hidden_size=100, num_hidden_layers=1, nr_cells=n, cell_size=32, read_heads=4)
    knn = {"auto": {}, "exact": {"knn": "exact"}, "faiss": {"knn": "faiss", "index": "ivf"}}[spec["knn"]]
    if spec["model"] == "sam":
        rnn = memfn.SAM(**common, sparse_reads=4, **knn)
    elif spec["model"] == "sdnc":
        rnn = memfn.SDNC(**common, sparse_reads=4, temporal_reads=4, **knn)
    else:
        rnn = memfn.DNC(**common)
    x = torch.randn(b, t, 8)
    base = _rss_mb()

    def call(hidden=None):
        out, hidden = rnn(x, hidden)
        out.square().mean().backward()
        return memfn.detach(hidden)

    call()
    fresh, carried = [], []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        call()
        fresh.append(time.perf_counter() - start)
    # Consecutive calls on one stream (a fresh call in between would replace the cached index).
    hidden = call()
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        hidden = call(hidden)
        carried.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    recall = recall_as_it_fills(spec, knn) if spec["model"] == "sam" else {}
    return {
        **spec,
        "fresh_ms": 1000 * statistics.median(fresh) / t,
        "carried_ms": 1000 * statistics.median(carried) / t,
        "peak_mb": peak - base,
        "recall": recall,
    }


def recall_as_it_fills(spec: dict, knn: dict) -> dict:
    """Recall@K of the fast path's search against exact top-k, per fill fraction (see the module docstring)."""
    import torch
    from memfn.sparse_fast import SparseEngine

    import memfn
    from memfn.sparse.knn import nearest_cells

    n, b, k = spec["cells"], spec["recall_batch"], 4
    mem = memfn.sam(n, 32, 4, k, **knn)
    out = {}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for fill in spec["recall_fills"]:
            state = memfn.batch_state(mem.init(), b)
            memory = state.memory
            for i in range(b):
                rows = torch.randperm(n, generator=g)[: max(1, round(fill * n))]
                memory[i, rows] = torch.randn(len(rows), 32, generator=g)
            engine = SparseEngine(mem.config, state)
            fast = engine.initial_state()
            for _ in range(spec["recall_steps"]):
                _, fast = engine.step(fast, torch.randn(b, mem.interface_size, generator=g) * 2)
            keys = torch.randn(b, spec["recall_queries"], 32, generator=g)
            found = engine._nearest(keys, k)
            exact = nearest_cells(engine.tape.memory, keys, k)
            out[str(fill)] = (found.unsqueeze(-1) == exact.unsqueeze(-2)).any(-1).float().mean().item()
    return out


def run_child(spec: dict) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, str(HERE), "--_child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)  # fmt: skip
    if proc.returncode != 0:
        print(f"  {spec['model']} N={spec['cells']}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dense_fits(cells: int, batch: int, steps: int) -> bool:
    from memfn._resources import available_bytes

    need = 1.5 * steps * batch * cells * cells * 4  # one N x N link kept per step (+ transients)
    available = available_bytes()
    return available is None or need < available


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, nargs="+", default=DEFAULT_CELLS)
    p.add_argument("--models", nargs="+", default=["sam", "sdnc", "dnc"], choices=["sam", "sdnc", "dnc"])
    p.add_argument("--sdnc-cells", type=int, nargs="+", default=[2048], help="N for SDNC (and the dense DNC)")
    p.add_argument("--knn", default="auto", choices=["auto", "faiss", "exact"], help="auto: the default arguments")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dense-max-cells", type=int, default=2048)
    p.add_argument("--recall-fills", type=float, nargs="*", default=[0.01, 0.1, 0.5, 1.0])
    p.add_argument("--recall-batch", type=int, default=2)
    p.add_argument("--recall-steps", type=int, default=20)
    p.add_argument("--recall-queries", type=int, default=256)
    p.add_argument("--json", default=None)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return 0

    base = {"batch": args.batch, "time": args.time, "repeats": args.repeats, "threads": args.threads,
            "recall_fills": args.recall_fills, "recall_batch": args.recall_batch, "recall_steps": args.recall_steps,
            "recall_queries": args.recall_queries}  # fmt: skip
    plan = []
    if "sam" in args.models:
        plan += [{"model": "sam", "knn": args.knn, "cells": n} for n in args.cells]
    if "sdnc" in args.models:
        plan += [{"model": "sdnc", "knn": args.knn, "cells": n} for n in args.sdnc_cells]
    if "dnc" in args.models:
        for n in sorted(set(args.sdnc_cells) | {min(args.cells)}):
            if n <= args.dense_max_cells and dense_fits(n, args.batch, args.time):
                plan.append({"model": "dnc", "knn": "-", "cells": n})
            else:
                print(f"  dnc N={n}: skipped, its link matrices would not fit in memory", file=sys.stderr)
    results = []
    for spec in plan:
        print(f"running {spec['model']} N={spec['cells']} ...", file=sys.stderr, flush=True)
        result = run_child({**base, **spec})
        if result:
            results.append(result)
    dense = {r["cells"]: r for r in results if r["model"] == "dnc"}
    smallest = {m: min((r for r in results if r["model"] == m), key=lambda r: r["cells"], default=None)
                for m in ("sam", "sdnc")}  # fmt: skip
    print(f"\nB={args.batch}, W=32, R=4, K=4, LSTM 100, T={args.time}, forward+backward, {args.threads} thread(s)\n")
    print(
        "| model | knn | N | fresh ms/step | carried ms/step | x time at smallest N | peak MB | target MB "
        "| vs dense DNC: speed | vs dense DNC: memory |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        first = smallest.get(r["model"])
        growth = f"{r['carried_ms'] / first['carried_ms']:.2f}" if first else "-"
        target = 2 * args.batch * r["cells"] * 32 * 4 / 2**20 + 500
        d = dense.get(r["cells"]) if r["model"] != "dnc" else None
        speed = f"{d['fresh_ms'] / r['fresh_ms']:.0f}x" if d else "-"
        memory = f"{d['peak_mb'] / max(r['peak_mb'], 1):.0f}x" if d else "-"
        print(
            f"| {r['model']} | {r['knn']} | {r['cells']:,} | {r['fresh_ms']:.2f} | {r['carried_ms']:.2f} | {growth} "
            f"| {r['peak_mb']:.0f} | {target:.0f} | {speed} | {memory} |"
        )
    fills = args.recall_fills
    if fills and any(r.get("recall") for r in results):
        print(
            f"\nrecall@4 of the search ({args.knn}) against exact top-k, {args.recall_queries} random keys x "
            f"{args.recall_batch} memories, by fraction of cells written\n"
        )
        print("| N | " + " | ".join(f"{f:.0%} written" for f in fills) + " |")
        print("|---|" + "---|" * len(fills))
        for r in results:
            if r.get("recall"):
                print(f"| {r['cells']:,} | " + " | ".join(f"{r['recall'][str(f)]:.3f}" for f in fills) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
