"""Where knn="auto" switches from exact top-k to the maintained faiss IVF index (issue 14).

    python benchmarks/knn_crossover.py                    # N = 2^10 .. 2^17, B=8, one thread
    python benchmarks/knn_crossover.py --cells 4096 65536 --batch 2

Per SAM step and batch of ``--batch`` examples (4 heads, K=4, W=32, every row written): the time of
``nearest_cells`` with the exact backend (the tie-ordered top-k of :mod:`memfn.sparse.knn`; the plain
float32 ``torch.topk`` it replaced is shown for reference), against one step of the fast path's
:class:`~memfn.sparse._ann_index.MaintainedIndex` per example: the update of the 17 rows a step writes,
then the search (with the default lists, ``N // 100`` capped at ``4 sqrt(N)``, 32 probed).
``AUTO_EXACT_MAX_CELLS`` in ``memfn/knn.py`` is the largest N where exact is the faster.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from memfn.numerics import cosine_similarity
from memfn.sparse._ann_index import MaintainedIndex, maintained_nearest
from memfn.sparse.knn import knn_config, nearest_cells, searchable_rows


def timed(fn, budget: float = 1.0) -> float:
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(n: int, batch: int, heads: int = 4, k: int = 4, width: int = 32) -> dict:
    g = torch.Generator().manual_seed(n)
    memory = torch.randn(batch, n, width, generator=g)
    keys = torch.randn(batch, heads, width, generator=g)
    exact = timed(lambda: nearest_cells(memory, keys, k))
    plain = timed(lambda: torch.topk(cosine_similarity(keys, memory), k, dim=-1).indices)
    config = knn_config(n, "faiss", "ivf")
    indexes = []
    for b in range(batch):
        index = MaintainedIndex(n, width, config.num_lists, config.index_checks)
        index.rebuild(searchable_rows(memory[b]), np.arange(n))
        indexes.append(index)
    written = heads * k + 1

    def maintained_step():
        for b, index in enumerate(indexes):
            ids = np.unique(np.random.randint(0, n, written))
            rows = torch.randn(len(ids), width)
            memory[b, torch.from_numpy(ids)] = rows
            index.update(ids, searchable_rows(rows), lambda b=b: (searchable_rows(memory[b]), np.arange(n)))
        return maintained_nearest(indexes, memory, keys, k)

    ivf = timed(maintained_step)
    return {"cells": n, "exact_ms": 1000 * exact, "plain_topk_ms": 1000 * plain, "ivf_ms": 1000 * ivf,
            "lists": indexes[0].index.nlist}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, nargs="+", default=[2**i for i in range(10, 18)])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"B={args.batch}, 4 heads, K=4, W=32, {args.threads} thread(s); ms per step for the whole batch\n")
    print("| N | exact (tie rule) ms | plain float32 topk ms | maintained IVF ms (update + search) | IVF lists |")
    print("|---|---|---|---|---|")
    for n in args.cells:
        r = measure(n, args.batch)
        row = f"| {n:,} | {r['exact_ms']:.3f} | {r['plain_topk_ms']:.3f} | {r['ivf_ms']:.3f} | {r['lists']} |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
