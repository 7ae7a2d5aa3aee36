"""Intra-op threads for the task scripts: 1 vs all cores, on an idle machine and with one core busy.

Each variant runs in its own process (``torch.set_num_threads`` is per process and sticky): a
training step of the README's copy model (forward, backward, Adam) timed over ``--steps`` steps
after a warm-up. "Busy" starts a pure-Python spin loop in another process for the duration, the
situation of a laptop running something else or a shared CI machine.

    python benchmarks/threads.py [--steps 40] [--sparse]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, torch, memfn
threads, steps, sparse = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(threads)
torch.manual_seed(0)
if sparse:  # the seed's SAM adding command's model
    model = memfn.SAM(3, 100, num_hidden_layers=1, nr_cells=1000, cell_size=32, read_heads=1, sparse_reads=4)
    x = torch.randn(20, 100, 3)
else:  # the README's quick start model
    model = memfn.DNC(6, 128, nr_cells=16, cell_size=8, read_heads=1)
    x = torch.randn(32, 17, 6)
opt = torch.optim.Adam(model.parameters(), 1e-3)
def step():
    opt.zero_grad()
    out, _ = model(x)
    out.square().mean().backward()
    opt.step()
for _ in range(3):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"ms": 1000 * (time.perf_counter() - t0) / steps}))
"""


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(threads: int, steps: int, sparse: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), "1" if sparse else "0"],
                          capture_output=True, text=True, env=env, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sparse", action="store_true", help="the seed's SAM adding model instead of the DNC")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for load in ("idle", "one core busy"):
        spinner = None
        if load != "idle":
            spinner = mp.Process(target=_spin, args=(time.time() + 3600,), daemon=True)
            spinner.start()
        try:
            for threads in sorted({1, cores}):
                rows.append((load, threads, measure(threads, args.steps, args.sparse)))
        finally:
            if spinner is not None:
                spinner.terminate()
                spinner.join()
    model = "SAM, 1,000 cells, T=100, B=20" if args.sparse else "DNC copy model, T=17, B=32"
    print(f"{model}: ms per training step ({cores} cores)")
    print(f"{'load':<15} {'threads':>7} {'ms/step':>9} {'vs 1 thread':>12}")
    for load, threads, ms in rows:
        one = next(m for lo, t, m in rows if lo == load and t == 1)
        print(f"{load:<15} {threads:>7} {ms:>9.1f} {ms / one:>11.2f}x")


if __name__ == "__main__":
    main()
