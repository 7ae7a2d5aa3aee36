"""Recall@K of memfn's approximate faiss indexes (ivf, hnsw) against exact top-k, on memories filled as SAM fills them.

    python benchmarks/knn_recall.py                              # N in {1024, 16384} (about 4 min on 1 thread)
    python benchmarks/knn_recall.py --cells 4096 --fills 0.25 1 --hnsw 16 64 --ivf-checks 1 8
    python benchmarks/knn_recall.py --ivf-lists 0 64 --json out.json
    PYTHONPATH=/tmp/snap python benchmarks/knn_recall.py     # a memfn/ snapshot instead of the installed one

What is compared: ``memfn.sparse.knn.nearest_cells(memory, keys, K, knn_config(N))`` (exact: ``torch.topk``
over every cosine score) against the same call with ``knn_config(N, "faiss", index=...,
num_lists=..., index_checks=...)``: ``flat`` (a sanity row: exact up to ties), ``ivf`` with
``--ivf-lists`` lists (0: memfn's default, N // 100) and ``--ivf-checks`` lists probed (0: memfn's
default, min(32, lists); a value above the number of lists is left out), and ``hnsw`` with efSearch
in ``--hnsw`` (M = 32; memfn's default efSearch is 32).

Memories: a pure ``memfn.sam(nr_cells=N, cell_size=W, read_heads=R, sparse_reads=K)`` memory (exact
backend, ``--memories`` independent memories batched with ``memfn.batch_state``) is stepped N times
under ``torch.no_grad()`` with interface vectors drawn from N(0, 1), and its rows are taken after
each fraction of ``--fills`` of the N steps (SAM writes the least-recently-used cell every step,
plus the cells it read the step before, so after ``f * N`` steps roughly a fraction ``f`` of the
rows is non-zero; the "written" column gives the measured fraction). No shortcut is taken: the
memory is filled step by step, also at N=16384 (about a minute per memory on one thread). The
baseline "gaussian" memory has N(0, 1) rows.

Queries (``--queries`` per memory): ``keys`` are N(0, 1) vectors, distributed as SAM's read keys
are during the fill (the raw key slice of the interface); ``rows`` are stored non-zero rows plus
Gaussian noise of ``--noise`` times the row's norm, i.e. a read looking for something it wrote.

Recall@K counts, per query, the distinct positions the index returned whose exact cosine score is at
least the K-th best exact score (so ties, e.g. among all-zero rows, do not count as misses), over K.
An ivf search probing few lists can return fewer than K hits; memfn then repeats the best one, which
counts once. "ms/search" is what one SAM step pays per example: the median wall time of one
``nearest_cells`` call on one memory ``[N, W]`` with R keys, index build (and, for ivf, k-means
training) included -- memfn builds a fresh index every step. Timing repeats adapt to
``--budget`` seconds per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dnc_vs_pytorch_dnc import _median_time, _timed  # noqa: E402

import memfn  # noqa: E402
from memfn.numerics import cosine_similarity  # noqa: E402
from memfn.sparse.knn import knn_config, nearest_cells  # noqa: E402


def filled_memories(n: int, args: argparse.Namespace) -> list[tuple[str, torch.Tensor]]:
    """``(fill label, memory [B, N, W])`` after each fraction of --fills of N SAM steps, then the gaussian rows."""
    mem = memfn.sam(nr_cells=n, cell_size=args.cell_size, read_heads=args.read_heads, sparse_reads=args.k)
    state = memfn.batch_state(mem.init(), args.memories)
    marks = {max(1, round(f * n)): f for f in args.fills}
    out = []
    start = time.perf_counter()
    with torch.no_grad():
        for t in range(1, max(marks) + 1):
            _, state = mem.step(state, torch.randn(args.memories, mem.interface_size))
            if t in marks:
                out.append((f"{marks[t]:.0%} of N steps", state.memory.clone()))
    print(f"# N={n}: {max(marks)} SAM steps x {args.memories} memories in {time.perf_counter() - start:.0f} s",
          flush=True)  # fmt: skip
    return out + [("gaussian", torch.randn(args.memories, n, args.cell_size))]


def queries(memory: torch.Tensor, kind: str, args: argparse.Namespace) -> torch.Tensor:
    """``[B, Q, W]`` query keys for a ``[B, N, W]`` memory."""
    b, _, w = memory.shape
    if kind == "keys":
        return torch.randn(b, args.queries, w)
    out = []
    for rows in memory:
        written = rows[rows.norm(dim=-1) > 0]
        picked = written[torch.randint(len(written), (args.queries,))]
        noise = torch.randn_like(picked) / w**0.5 * picked.norm(dim=-1, keepdim=True)
        out.append(picked + args.noise * noise)
    return torch.stack(out)


def recall(memory: torch.Tensor, keys: torch.Tensor, exact: torch.Tensor, found: torch.Tensor) -> float:
    """Mean over queries of (distinct found positions scoring >= the K-th exact score) / K."""
    scores = cosine_similarity(keys, memory)  # [B, Q, N]
    kth = scores.gather(-1, exact[..., -1:])  # exact is best first
    found = found.sort(-1).values
    distinct = torch.ones_like(found, dtype=torch.bool)
    distinct[..., 1:] = found[..., 1:] != found[..., :-1]
    hits = (scores.gather(-1, found) >= kth - 1e-6) & distinct
    return hits.float().sum(-1).mean().item() / found.shape[-1]


def index_configs(n: int, args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """``(index, params text, knn_config kwargs)``: exact, flat, the ivf grid, the hnsw efSearch values."""
    out = [("exact", "torch.topk", {}), ("flat", "IndexFlatIP", dict(knn="faiss", index="flat"))]
    for lists in dict.fromkeys(args.ivf_lists):
        lists = lists or knn_config(n).num_lists  # 0: memfn's default
        for checks in dict.fromkeys(c or knn_config(n, "faiss", "ivf", lists).index_checks for c in args.ivf_checks):
            if checks <= lists:
                kw = dict(knn="faiss", index="ivf", num_lists=lists, index_checks=checks)
                out.append(("ivf", f"lists={lists} nprobe={checks}", kw))
    out += [("hnsw", f"M=32 efSearch={ef}", dict(knn="faiss", index="hnsw", index_checks=ef)) for ef in args.hnsw]
    return out


def measure(n: int, args: argparse.Namespace) -> list[dict]:
    results = []
    timing = dict(budget=args.budget, min_repeats=args.min_repeats, repeats=args.repeats, slow_repeats=0,
                  slow_seconds=0)  # fmt: skip
    configs = index_configs(n, args)
    for fill, memory in filled_memories(n, args):
        written = (memory.norm(dim=-1) > 0).float().mean().item()
        keys = {kind: queries(memory, kind, args) for kind in args.query_kinds}
        exact = {kind: nearest_cells(memory, q, args.k) for kind, q in keys.items()}
        step_keys = torch.randn(args.read_heads, args.cell_size)
        for index, params, kw in configs:
            config = knn_config(n, **kw)
            row = dict(index=index, params=params, cells=n, fill=fill, written=written, k=args.k)
            for kind, q in keys.items():
                row[f"recall_{kind}"] = recall(memory, q, exact[kind], nearest_cells(memory, q, args.k, config))
            search = lambda c=config, m=memory[0], q=step_keys: nearest_cells(m, q, args.k, c)
            first = _timed(search)
            row["search_s"], row["search_n"], _ = _median_time(search, min(first, _timed(search)), timing)
            results.append(row)
            recalls = ", ".join(f"{kind} {row[f'recall_{kind}']:.3f}" for kind in keys)
            print(f"N={n} {fill} {index} {params}: recall@{args.k} {recalls}; {row['search_s'] * 1e3:.2f} ms/search",
                  flush=True)  # fmt: skip
    return results


def print_table(results: list[dict], kinds: list[str], k: int, out=sys.stdout) -> None:
    recall_columns = [f"recall@{k} {kind}" for kind in kinds]
    columns = ["index", "params", "N", "fill", "written", *recall_columns, "ms/search", "reps"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|", file=out)
    for r in results:
        recalls = [f"{r[f'recall_{kind}']:.3f}" for kind in kinds]
        row = [r["index"], r["params"], r["cells"], r["fill"], f"{r['written']:.0%}", *recalls,
               f"{r['search_s'] * 1e3:.2f}", r["search_n"]]  # fmt: skip
        print("| " + " | ".join(map(str, row)) + " |", file=out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--cells", type=int, nargs="+", default=[1024, 16384], help="nr_cells values")
    ap.add_argument("--fills", type=float, nargs="+", default=[0.1, 0.5, 1.0], help="fractions of N SAM steps")
    ap.add_argument("--memories", type=int, default=2, help="independent memories per fill (batched)")
    ap.add_argument("--queries", type=int, default=500, help="queries per memory and kind")
    ap.add_argument("--query-kinds", nargs="+", choices=("keys", "rows"), default=["keys", "rows"])
    ap.add_argument("--noise", type=float, default=0.5, help="'rows' queries: noise norm / row norm")
    ap.add_argument("--k", type=int, default=4, help="K = sparse_reads (neighbours per query)")
    ap.add_argument("--cell-size", type=int, default=32)
    ap.add_argument("--read-heads", type=int, default=4, help="R: keys per timed search")
    ap.add_argument("--ivf-lists", type=int, nargs="+", default=[0], help="ivf num_lists (0: memfn's N // 100)")
    ap.add_argument(
        "--ivf-checks", type=int, nargs="+", default=[1, 4, 0], help="ivf lists probed (0: memfn's, min(32, lists))"
    )
    ap.add_argument("--hnsw", type=int, nargs="+", default=[16, 32, 64], help="hnsw efSearch values")
    ap.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    ap.add_argument("--budget", type=float, default=1.0, help="about this many seconds per timing")
    ap.add_argument("--repeats", type=int, default=20, help="at most this many timed searches")
    ap.add_argument("--min-repeats", type=int, default=3, help="at least this many timed searches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write all raw results to this JSON file")
    args = ap.parse_args()

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(
        f"# memfn from {Path(memfn.__file__).parent}, torch {torch.__version__}, faiss {faiss.__version__}, "
        f"{args.threads} thread(s); W={args.cell_size}, "
        f"K={args.k}, {args.memories} memories x {args.queries} queries per kind; ms/search: one memory, "
        f"R={args.read_heads} keys, index build included",
        flush=True,
    )
    results = [r for n in args.cells for r in measure(n, args)]
    print()
    print_table(results, args.query_kinds, args.k)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
