"""Ablation of issue 18's DNC options: plain DNC vs masking, de-allocation, link sharpness, all three.

    OMP_NUM_THREADS=1 python benchmarks/dnc_ablation.py --iterations 800       # 5 variants x 2 tasks
    python benchmarks/dnc_ablation.py --iterations 500 --tasks copy --variants plain all

Every run has the same seed, data, model size and budget (``--iterations`` of batch 32, one
thread; ``--seconds`` caps a run's training time as well); the variants differ only in
``memfn.DNC``'s options. The budget is counted in iterations because the machine is shared: time
is reported, but it moves with the load. Every 100 iterations a fixed validation batch at the
longest training length is scored; the table gives the first iteration (and training seconds) at
which it reached ``--target``, then the held-out error of the final model on fresh data at 1x, 2x
and 4x the longest training length.

Tasks:
``copy``: memfn's copy task (5 bits + delimiter), trained on lengths 1-4; error = wrong bits per sequence.
``kv``: key-value retrieval, defined here: ``K`` (key, value) pairs of 4-bit keys (distinct) and
4-bit values, then each key again as a query in random order; the answer is its value at the query
step. Trained on ``K`` 1-4; error = wrong value bits per query (chance 2).
Repeat copy and associative recall are issue 17's (branch issue17), not merged here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import memfn  # noqa: E402
from memfn.tasks.definitions import Batch, CopyTask  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "masking": {"masking": True},
    "deallocation": {"deallocation": True},
    "sharpness": {"link_sharpness": True},
    "all": {"masking": True, "deallocation": True, "link_sharpness": True},
}
TRAIN_MAX = 4
MULTIPLES = (1, 2, 4)
KV_BITS = 4


class KeyValue:
    """Key-value retrieval (see the module docstring): inputs ``(B, 2K, 2 * bits + 1)``."""

    input_size = 2 * KV_BITS + 1

    def sample(self, batch: int, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        codes = torch.stack([torch.randperm(2**KV_BITS, generator=gen)[:k] for _ in range(batch)])  # distinct keys
        keys = ((codes.unsqueeze(-1) >> torch.arange(KV_BITS)) & 1).float()  # (B, K, bits)
        values = torch.randint(0, 2, (batch, k, KV_BITS), generator=gen).float()
        order = torch.stack([torch.randperm(k, generator=gen) for _ in range(batch)])
        inputs = torch.zeros(batch, 2 * k, self.input_size)
        inputs[:, :k, :KV_BITS], inputs[:, :k, KV_BITS : 2 * KV_BITS] = keys, values
        inputs[:, k:, :KV_BITS] = torch.gather(keys, 1, order.unsqueeze(-1).expand(-1, -1, KV_BITS))
        inputs[:, k:, -1] = 1.0  # query flag
        targets = torch.gather(values, 1, order.unsqueeze(-1).expand(-1, -1, KV_BITS))
        return inputs, targets, k

    def answer(self, output: Tensor, k: int) -> Tensor:
        return output[:, k:, :KV_BITS]

    def loss(self, output: Tensor, batch: tuple[Tensor, Tensor, int]) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.answer(output, batch[2]), batch[1])

    def error(self, output: Tensor, batch: tuple[Tensor, Tensor, int]) -> float:
        wrong = (self.answer(output, batch[2]) > 0) != (batch[1] > 0.5)
        return wrong.float().sum(-1).mean().item()  # wrong bits per query


class Copy:
    """memfn's copy task with the same interface as :class:`KeyValue`."""

    def __init__(self) -> None:
        self.task = CopyTask(6)
        self.input_size = 6

    def sample(self, batch: int, length: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        b = self.task.sample(batch, length, gen)
        return b.inputs, b.targets, b.length

    def loss(self, output: Tensor, batch: tuple[Tensor, Tensor, int]) -> Tensor:
        return self.task.loss(output, Batch(*batch))

    def error(self, output: Tensor, batch: tuple[Tensor, Tensor, int]) -> float:
        return self.task.metric(output, Batch(*batch))  # wrong bits per sequence


TASKS: dict[str, type[Copy] | type[KeyValue]] = {"copy": Copy, "kv": KeyValue}


def run(task_name: str, variant: str, args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(args.seed)
    task = TASKS[task_name]()
    model = memfn.DNC(input_size=task.input_size, hidden_size=64, nr_cells=24, cell_size=16, read_heads=2,
                      **VARIANTS[variant])  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-9, betas=(0.9, 0.98))
    data = torch.Generator().manual_seed(args.seed)
    val = task.sample(64, TRAIN_MAX, torch.Generator().manual_seed(10**6 + args.seed))

    def out(batch: tuple[Tensor, Tensor, int]) -> Tensor:
        output: Tensor = model(batch[0])[0]
        return output

    seconds, it, reached = 0.0, 0, None
    while it < args.iterations and seconds < args.seconds:
        start = time.perf_counter()
        for _ in range(100):
            batch = task.sample(32, int(torch.randint(1, TRAIN_MAX + 1, (1,), generator=data)), data)
            loss = task.loss(out(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 50.0)
            optimizer.step()
        it += 100
        seconds += time.perf_counter() - start
        with torch.no_grad():
            err = task.error(out(val), val)
        if reached is None and err <= args.target:
            reached = (it, seconds)
        print(f"    {task_name} {variant} {it} {seconds:.0f}s validation error {err:.3f}", flush=True)
    held_out = torch.Generator().manual_seed(2 * 10**6 + args.seed)
    with torch.no_grad():
        errors = [task.error(out(b), b) for b in (task.sample(100, TRAIN_MAX * m, held_out) for m in MULTIPLES)]
    return {"task": task_name, "variant": variant, "iterations": it, "seconds": seconds, "reached": reached,
            "errors": errors}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=800, help="training iterations per run (the budget)")
    ap.add_argument("--seconds", type=float, default=float("inf"), help="cap on each run's training seconds")
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--target", type=float, default=0.1, help="validation error counted as learnt")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for task in args.tasks:
        for variant in args.variants:
            r = run(task, variant, args)
            rows.append(r)
            print(f"  done: {task} {variant}: {r}", flush=True)
    print(f"\nseed {args.seed}, {args.iterations} iterations of batch 32 per run, target error {args.target:g} "
          f"(copy: wrong bits per sequence; kv: wrong bits per query)\n")  # fmt: skip
    print("| task | variant | iterations (s) run | to target: iterations (s) | held-out error at 1x / 2x / 4x |")
    print("|---|---|---|---|---|")
    for r in rows:
        reached = r["reached"]
        to_target = f"{reached[0]:,} ({reached[1]:.0f})" if isinstance(reached, tuple) else "not reached"
        errs = " / ".join(f"{e:.2f}" for e in r["errors"])  # type: ignore[attr-defined]
        print(f"| {r['task']} | {r['variant']} | {r['iterations']:,} ({r['seconds']:.0f}) | {to_target} | {errs} |")


if __name__ == "__main__":
    main()
