"""Ablation of issue 18's DNC options: plain DNC vs masking, de-allocation, link sharpness, all three.

    OMP_NUM_THREADS=1 python benchmarks/dnc_ablation.py --seeds 0 1 2          # 5 variants x 4 tasks x 3 seeds
    python benchmarks/dnc_ablation.py --tasks key_value --variants plain masking --iterations 3000

Every run of one task has the same seed, data, model size and budget (``--iterations`` of batch 32,
one thread; ``--seconds`` caps a run's training time as well); the variants differ only in
``memfn.DNC``'s options. The budget is counted in iterations because the machine may be shared:
time is reported, but it moves with the load. Every 100 iterations a fixed validation batch at the
longest training length is scored; the table gives, over the seeds, how many runs reached the
task's target and the median iteration at which they did, then the mean held-out error of the final
models on fresh data at 1x, 2x and 4x the longest training length (each seed's value in the JSON).

Tasks (issue 17's definitions, ``memfn.tasks``; lengths drawn uniformly up to the longest):
``copy`` (5 bits, 1-4 vectors; error = wrong bits per sequence, target 0.1), ``repeat_copy`` (4
bits, 1-4 vectors, 1-3 repeats), ``associative_recall`` (6-bit items, 2-6 items) and ``key_value``
(5-bit keys and values, 1-6 pairs): error = fraction of wrong answer bits, target 0.01 (repeat
copy, associative recall) and 0.05 (key-value).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import memfn  # noqa: E402
from memfn.tasks.definitions import Batch, CopyTask, Task  # noqa: E402
from memfn.tasks.paper_tasks import AssociativeRecallTask, KeyValueTask, RepeatCopyTask  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "masking": {"masking": True},
    "deallocation": {"deallocation": True},
    "sharpness": {"link_sharpness": True},
    "all": {"masking": True, "deallocation": True, "link_sharpness": True},
}


class Setup(NamedTuple):
    task: Task
    shortest: int  # training lengths are drawn from shortest..longest
    longest: int
    target: float  # validation error counted as learnt


def setups() -> dict[str, Setup]:
    return {
        "copy": Setup(CopyTask(6), 1, 4, 0.1),
        "repeat_copy": Setup(RepeatCopyTask(6), 1, 4, 0.01),
        "associative_recall": Setup(AssociativeRecallTask(8), 2, 6, 0.01),
        "key_value": Setup(KeyValueTask(11), 1, 6, 0.05),
    }


def run(task_name: str, variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(seed)
    setup = setups()[task_name]
    task = setup.task
    model = memfn.DNC(input_size=task.input_size, hidden_size=64, nr_cells=24, cell_size=16, read_heads=2,
                      output_size=getattr(task, "output_size", None), **VARIANTS[variant])  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-9, betas=(0.9, 0.98))
    data = torch.Generator().manual_seed(seed)
    val = task.sample(64, setup.longest, torch.Generator().manual_seed(10**6 + seed))

    def out(batch: Batch) -> torch.Tensor:
        output: torch.Tensor = model(batch.inputs)[0]
        return output

    seconds, it, reached = 0.0, 0, None
    while it < args.iterations and seconds < args.seconds:
        start = time.perf_counter()
        for _ in range(100):
            length = int(torch.randint(setup.shortest, setup.longest + 1, (1,), generator=data))
            batch = task.sample(32, length, data)
            loss = task.loss(out(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 50.0)
            optimizer.step()
        it += 100
        seconds += time.perf_counter() - start
        with torch.no_grad():
            err = task.metric(out(val), val)
        if reached is None and err <= setup.target:
            reached = (it, seconds)
        if not args.quiet:
            print(f"    {task_name} {variant} seed {seed} {it} {seconds:.0f}s validation error {err:.4f}", flush=True)
    held_out = torch.Generator().manual_seed(2 * 10**6 + seed)
    with torch.no_grad():
        lengths = [setup.longest * m for m in (1, 2, 4)]
        errors = [task.metric(out(b), b) for b in (task.sample(100, n, held_out) for n in lengths)]
    return {"task": task_name, "variant": variant, "seed": seed, "iterations": it, "seconds": seconds,
            "reached": reached, "errors": errors}  # fmt: skip


def summary_rows(results: list[dict[str, Any]]) -> list[str]:
    """One markdown row per (task, variant): runs that reached the target, median iterations to it,
    mean held-out errors."""
    rows = []
    keys = list(dict.fromkeys((r["task"], r["variant"]) for r in results))
    for task, variant in keys:
        runs = [r for r in results if r["task"] == task and r["variant"] == variant]
        hits = [r["reached"][0] for r in runs if r["reached"]]
        to_target = f"{len(hits)}/{len(runs)}" + (f", median {statistics.median(hits):,.0f}" if hits else "")
        means = [statistics.fmean(r["errors"][i] for r in runs) for i in range(3)]
        seconds = statistics.fmean(r["seconds"] for r in runs)
        rows.append(f"| {task} | {variant} | {runs[0]['iterations']:,} ({seconds:.0f} s) | {to_target} | "
                    + " / ".join(f"{m:.4g}" for m in means) + " |")  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2000, help="training iterations per run (the budget)")
    ap.add_argument("--seconds", type=float, default=float("inf"), help="cap on each run's training seconds")
    ap.add_argument("--tasks", nargs="+", choices=list(setups()), default=list(setups()))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write every run's result to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no validation line every 100 iterations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                r = run(task, variant, seed, args)
                results.append(r)
                print(f"  done: {r}", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"\nseeds {args.seeds}, {args.iterations:,} iterations of batch 32 per run; error: copy wrong bits per "
          "sequence, the others the fraction of wrong answer bits\n")  # fmt: skip
    print("| task | variant | iterations (mean s) per run | reached target: runs, median iterations "
          "| mean held-out error at 1x / 2x / 4x |")  # fmt: skip
    print("|---|---|---|---|---|")
    print("\n".join(summary_rows(results)))


if __name__ == "__main__":
    main()
