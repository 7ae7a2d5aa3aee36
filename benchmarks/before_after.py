"""Two memfn trees side by side: the same shells, forward + backward, in alternating child processes.

    python benchmarks/before_after.py /tmp/memfn_before .     # e.g. a `git archive` snapshot vs this tree

Each (model, tree) pair runs ``--rounds`` times in fresh children, alternating the trees (ABAB...),
so load changes on a shared machine hit both alike; a child times the median of ``--repeats``
forward+backward calls of a T-step sequence from a fresh memory on one thread. Prints ms per call
for each tree and the ratio after/before (< 1: faster after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    "DNC N=64": "memfn.DNC(64, 128, nr_cells=64, cell_size=32, read_heads=4)",
    "SAM N=1024": "memfn.SAM(8, 100, nr_cells=1024, cell_size=32, read_heads=4, sparse_reads=4)",
    "SDNC N=1024": "memfn.SDNC(8, 100, nr_cells=1024, cell_size=32, read_heads=4, sparse_reads=4, temporal_reads=4)",
}

CHILD = """
import json, statistics, sys, time, torch, memfn
torch.set_num_threads(1); torch.manual_seed(0)
rnn = {model}
x = torch.randn({batch}, {steps}, rnn.input_size)
def call():
    out, _ = rnn(x, None, reset_experience=True)
    out.sum().backward()
call()
times = []
for _ in range({repeats}):
    start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def child(tree: str, model: str, args: argparse.Namespace) -> float:
    code = CHILD.format(model=MODELS[model], batch=args.batch, steps=args.steps, repeats=args.repeats)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="folder holding the memfn/ package before the change")
    ap.add_argument("after", help="folder holding the memfn/ package after it")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"# before: {args.before}  after: {args.after}  B={args.batch} T={args.steps}, 1 thread, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'model':<14} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for model in args.models:
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for name in ("before", "after"):
                times[name].append(child(getattr(args, name), model, args))
        b, a = (statistics.median(times[n]) * 1e3 for n in ("before", "after"))
        print(f"{model:<14} {b:>10.1f} {a:>10.1f} {a / b:>13.2f}", flush=True)
    print(f"# done at load {os.getloadavg()[0]:.1f}, {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
