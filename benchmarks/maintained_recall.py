"""Recall@K of the maintained faiss IVF index against exact top-k while a SAM memory fills (issue 5).

    python benchmarks/maintained_recall.py                    # N = 4,096 and 16,384
    python benchmarks/maintained_recall.py --cells 4096 --checks 1 8 32

A batch of SAM memories (cell_size 32, 4 heads, 4 sparse reads) runs on the fast path with
``knn="faiss", index="ivf"`` for as many steps as it takes to write every cell a few times, fed
random interface vectors. At each fill level the index the step really used is queried with the
step's own read keys (R per example: few, so that column is coarse) and with ``--queries`` random
keys per example, and the K cells it returns are compared with exact
cosine top-k over the same memory (:func:`memfn.sparse.knn.nearest_cells`). "rebuilds" counts the
quantiser retrainings so far (when the indexed rows have doubled, then every time as many rows
have been rewritten); "search ms" is the mean time of one maintained search per example.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import memfn
from memfn.sparse._fast import SparseEngine
from memfn.sparse.knn import _fill_missing, nearest_cells


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return (found.unsqueeze(-1) == exact.unsqueeze(-2)).any(-1).float().mean().item()


def measure(cells: int, checks: int, batch: int, passes: float, points: int, seed: int, queries: int) -> list[dict]:
    torch.manual_seed(seed)
    mem = memfn.sam(cells, 32, 4, 4, knn="faiss", index="ivf", index_checks=checks)
    state = memfn.batch_state(mem.init(), batch)
    engine = SparseEngine(mem.config, state)
    fast = engine.initial_state()
    # Reads go to the cells nearest the keys, mostly ones already written, so a step usually adds
    # one fresh row (the least-used cell): filling N cells takes about N steps.
    steps = int(passes * cells) + 1
    marks = sorted({max(1, int(steps * f)) for f in np.linspace(0, 1, points + 1)[1:]})
    rows = []
    with torch.no_grad():
        for t in range(1, steps + 1):
            xi = torch.randn(batch, mem.interface_size) * 2
            _, fast = engine.step(fast, xi)
            if t not in marks:
                continue
            keys = memfn.sparse.split_sam_interface(xi, 4, 32).read_keys
            memory = engine.tape.memory
            written = (memory.abs().sum(-1) > 0).float().mean().item()
            random_keys = torch.randn(batch, queries, keys.shape[-1])
            start = time.perf_counter()
            found = engine._nearest(keys, 4)
            elapsed = (time.perf_counter() - start) / batch
            found_random = torch.from_numpy(np.stack([
                _fill_missing(index.search(np.ascontiguousarray(q.numpy()), 4))
                for index, q in zip(engine.indexes, random_keys)
            ]))  # fmt: skip
            rows.append({
                "cells": cells, "checks": checks, "step": t, "written": written,
                "recall_keys": recall(found, nearest_cells(memory, keys, 4)),
                "recall_random": recall(found_random, nearest_cells(memory, random_keys, 4)),
                "search_ms": 1000 * elapsed, "rebuilds": engine.indexes[0].rebuilds,
                "lists": engine.indexes[0].index.nlist if engine.indexes[0].index is not None else 0,
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--checks", type=int, nargs="+", default=[8, 32], help="IVF lists probed (index_checks)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--passes", type=float, default=1.5, help="steps, in multiples of N")
    p.add_argument("--points", type=int, default=6, help="fill levels reported")
    p.add_argument("--queries", type=int, default=256, help="random keys per example and fill level")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        "| N | lists probed | step | cells written | lists | rebuilds | recall@4 (read keys) | "
        "recall@4 (random keys) | search ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for cells in args.cells:
        for checks in args.checks:
            print(f"measuring N={cells} index_checks={checks} ...", file=sys.stderr, flush=True)
            for r in measure(cells, checks, args.batch, args.passes, args.points, args.seed, args.queries):
                print(f"| {r['cells']:,} | {r['checks']} | {r['step']} | {r['written']:.0%} | {r['lists']} | "
                      f"{r['rebuilds']} | {r['recall_keys']:.3f} | {r['recall_random']:.3f} | {r['search_ms']:.3f} |",
                      flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
