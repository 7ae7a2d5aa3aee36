"""Learning speed and generalisation on copy: memfn.DNC against pytorch-dnc, side by side in one run.

    python benchmarks/copy_learning.py                       # seed 0, every variant (~5 minutes)
    python benchmarks/copy_learning.py --seeds 0 1 2 3 --variants memfn torch

The config is issue 6's learning target: pytorch-dnc's copy-task defaults (input 6, LSTM 2 x 64,
16 cells of 20, 4 read heads, gradient clip 50, Adam with pytorch-dnc's eps and betas) but batch
32, lengths 1-4 and lr 1e-3. Every 100 iterations a fresh batch of 32 at length 4 is scored; a
variant stops when it has at most ``--target`` wrong bits per sequence (or at ``--max-seconds`` of
training). Then 100 sequences per length 5-8, longer than any it trained on, are scored.

Variants, each in a fresh child process on ``--threads`` threads (default 1):
``memfn`` = ``memfn.DNC`` (its controller starts memoryless), ``torch`` = ``memfn.DNC`` with
``controller_init="torch"`` (``nn.LSTM``'s initialisation) and ``dnc`` = ``dnc.DNC`` from the
``dnc`` package 1.1.0 (skipped when it cannot be imported). The time ratio is the dnc variant's
training seconds over each variant's (> 1: faster than pytorch-dnc). Training seconds exclude
start-up and the final evaluation; the machine's load average is printed for each child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))
VARIANTS = ("memfn", "torch", "dnc")
EVAL_LENGTHS = (5, 6, 7, 8)


def build(variant: str):
    kw = dict(input_size=6, hidden_size=64, rnn_type="lstm", num_layers=1, num_hidden_layers=2, nr_cells=16,
              cell_size=20, read_heads=4, batch_first=True, gpu_id=-1)  # fmt: skip
    if variant == "dnc":
        import dnc

        return dnc.DNC(**kw)
    import memfn

    return memfn.DNC(**kw, controller_init="torch" if variant == "torch" else "memoryless")


def child(variant: str, seed: int, args: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    from memfn.tasks.definitions import CopyTask

    warnings.simplefilter("ignore")  # pytorch-dnc's deprecation warnings
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    model = build(variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-9, betas=(0.9, 0.98))
    task = CopyTask(6)
    data, held_out = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(10**6 + seed)

    def outputs(batch):
        return model(batch.inputs, (None, None, None), reset_experience=True)[0]

    def wrong_bits(length: int, size: int) -> float:
        with torch.no_grad():
            batch = task.sample(size, length, held_out)
            return task.metric(outputs(batch), batch)

    seconds, it, reached = 0.0, 0, False
    while seconds < args.max_seconds and not reached:
        start = time.perf_counter()
        for _ in range(100):
            batch = task.sample(32, int(torch.randint(1, 5, (1,), generator=data)), data)
            loss = task.loss(outputs(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 50.0)
            optimizer.step()
        it += 100
        reached = wrong_bits(4, 32) <= args.target
        seconds += time.perf_counter() - start
    rates = {str(length): 100 * wrong_bits(length, 100) / (length * 5) for length in EVAL_LENGTHS}
    return {"variant": variant, "seed": seed, "iterations": it, "seconds": seconds, "reached": reached,
            "rates": rates, "load": os.getloadavg()[0]}  # fmt: skip


def dnc_importable() -> bool:
    return subprocess.run([sys.executable, "-c", "import dnc"], capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--target", type=float, default=0.04, help="wrong bits per sequence at length 4")
    ap.add_argument("--max-seconds", type=float, default=400.0, help="training time cap per run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return
    variants = list(args.variants)
    if "dnc" in variants and not dnc_importable():
        print("`import dnc` fails in this interpreter (pip install --no-deps dnc==1.1.0): skipping dnc")
        variants.remove("dnc")
    results = []
    for seed in args.seeds:
        for variant in variants:
            cmd = [sys.executable, str(HERE), "--child", variant, str(seed), "--target", str(args.target),
                   "--max-seconds", str(args.max_seconds), "--threads", str(args.threads)]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if r.returncode != 0:
                sys.exit(f"{variant} seed {seed} failed:\n{r.stderr}")
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            res = results[-1]
            print(f"  done: {variant} seed {seed}, {res['iterations']} iterations, {res['seconds']:.1f} s, "
                  f"load {res['load']:.2f}", flush=True)  # fmt: skip
    dnc_seconds = {r["seed"]: r["seconds"] for r in results if r["variant"] == "dnc" and r["reached"]}
    head = "| variant | seed | iterations to target | training s | dnc s / this s | wrong bits at 5 / 6 / 7 / 8 |"
    print(f"\nlearning copy to <= {args.target} wrong bits per sequence at length 4, then lengths 5-8\n")
    print(head + "\n|" + "---|" * 6)
    for r in results:
        its = f"{r['iterations']:,}" if r["reached"] else f"not in {r['iterations']:,}"
        ratio = f"{dnc_seconds[r['seed']] / r['seconds']:.1f}x" if r["seed"] in dnc_seconds and r["reached"] else "-"
        rates = " / ".join(f"{r['rates'][str(n)]:.1f}" for n in EVAL_LENGTHS)
        print(f"| {r['variant']} | {r['seed']} | {its} | {r['seconds']:.1f} | {ratio} | {rates} % |")


if __name__ == "__main__":
    main()
