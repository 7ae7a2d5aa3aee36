"""SAM and SDNC (exact and faiss nearest neighbours) against the dense memfn.DNC: time per step and memory vs N.

    python benchmarks/sparse_step_time.py                      # issue 4's table (about 15 min on 1 thread)
    python benchmarks/sparse_step_time.py --cells 1024 4096 --models sam --knn faiss --index flat ivf hnsw
    python benchmarks/sparse_step_time.py --json out.json --threads 2
    python benchmarks/sparse_step_time.py --memfn-path /tmp/snap --memfn-kwargs '{"fast": false}'

Config (issue 4): ``memfn.SAM`` / ``memfn.SDNC`` / ``memfn.DNC`` with an LSTM controller (hidden
``--hidden`` 100, num_layers 1, num_hidden_layers 2), input_size 8, cell_size W=32, R=4 read heads,
K=4 sparse_reads, L=4 temporal_reads (SDNC), batch B=8, T=32 steps, nr_cells N in
{1024, 4096, 16384, 65536}. Nearest-neighbour backends (``--knn``): ``exact`` (``torch.topk`` over
all N cosine scores) and ``faiss``, with each index of ``--index`` (default ``flat``, which ranks
exactly like ``exact``; ``ivf`` and ``hnsw`` are approximate and build -- for ivf, train -- a fresh
index per example and step, so they are slow at large N and run only when asked).

Every (model, knn, N) runs in a fresh child process, so its peak memory is its own. A child
builds the model and an input ``[B, T, 8]``, then times whole T-step calls from a fresh memory
(``reset_experience=True``, as a training step): one forward under ``torch.no_grad()`` alone (for
its peak memory), then forward + ``output.sum().backward()`` (first call, warm-up calls, the median
of repeats), then the no-grad forward the same way. The forward is timed after the backward on
purpose: in a fresh process glibc's malloc still serves every [B, N, W] tensor with a fresh
``mmap`` (zero-filled page by page, unmapped when freed) until a larger block has been freed,
which the backward does; before that the forward measured up to 2.5x slower (SAM, N=16384).
``--glibc-keep-memory`` takes the allocator out altogether (malloc keeps and reuses big blocks),
to see how much of a time is page faults rather than the maths. The number of repeats adapts to
the duration of a warm call (about ``--budget`` seconds per measurement, between
``--min-repeats`` and ``--repeats``; a first call slower than ``--slow-seconds`` gets no warm-up
and ``--slow-repeats`` repeats). "ms/step" is the median call time divided by T.

Memory: "fwd peak MB" is the child's peak RSS (``ru_maxrss``) after its first forward minus its
peak right after importing and building (its baseline); "peak MB" is the same after all the
forward+backward calls, i.e. the training peak (autograd's saved tensors dominate it). Before a
child starts, its memory is estimated and the child is skipped with the reason printed if the
estimate does not fit in 90% of ``MemAvailable``: the dense DNC keeps a ``[B, N, N]`` link matrix
per step for backward (``--dense-factor`` * T*B*N^2*4 bytes + 1 GB; about 1.3x was measured at
N=1024), so at B=8, T=32 N=4096 needs ~20-40 GB and N=16384 ~300+ GB. When only its backward does
not fit, the dense DNC is still timed forward-only (``--dense-fwd-factor`` * B*N^2*4 bytes + 1 GB).
``--max-dense-cells`` skips the dense DNC above that N outright. The pure sparse step keeps
O(N*W) per step: ``--sparse-factor`` * T*B*N*(4W + 24L + 8) bytes + 1 GB.

``--memfn-path DIR`` benchmarks the memfn/ package in DIR (put first on the children's PYTHONPATH)
instead of the installed one -- e.g. a ``git archive`` snapshot, so that edits made while the
benchmark runs cannot change it halfway; ``--memfn-kwargs`` passes extra options (JSON) to
``memfn.SAM`` / ``memfn.SDNC``. The memfn directory used is printed above the table.

Ratios "x DNC" are measured side by side in one run: dense DNC time / this time (> 1: this is
faster than the dense DNC at the same N) and dense DNC peak / this peak (> 1: this is leaner).
Below the table, the scaling exponent of each (model, knn): the slope of log(ms/step) against
log(N) over all measured N, and over the last two. CPU timings are noisy on a shared machine;
the 1-minute load average at each child's start and end is kept in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from dnc_vs_pytorch_dnc import (  # noqa: E402
    KEEP_MEMORY_TUNABLES,
    RESULT_TAG,
    _fmt,
    _maxrss_kb,
    _median_time,
    _timed,
    mem_available_bytes,
    wait_for_quiet,
)

MODELS = ("sam", "sdnc", "dnc")
KNNS = ("exact", "faiss")
INDEXES = ("flat", "ivf", "hnsw")
#: The repeat policy of every measurement (see above): (flag, type, default, help).
TIMING_OPTIONS = (
    ("--repeats", int, 10, "at most this many timed repeats"),
    ("--min-repeats", int, 3, "at least this many timed repeats"),
    ("--warmup", int, 1, "warm-up calls after the first call"),
    ("--budget", float, 5.0, "about this many seconds per measurement"),
    ("--slow-seconds", float, 15.0, "a first call slower than this gets no warm-up and --slow-repeats"),
    ("--slow-repeats", int, 1, "repeats for calls slower than --slow-seconds"),
)
#: What may run where (see above): (flag, type, default, help).
MEMORY_OPTIONS = (
    ("--max-dense-cells", int, 16384, "never run the dense DNC above this N"),
    ("--dense-factor", float, 2.0, "dense f+b estimate: this * T*B*N^2*4 bytes + 1 GB"),
    ("--dense-fwd-factor", float, 8.0, "dense forward-only estimate: this * B*N^2*4 bytes + 1 GB"),
    ("--sparse-factor", float, 2.0, "sparse estimate: this * T*B*N*(4W + 24L + 8) bytes + 1 GB"),
)


# --------------------------------------------------------------------------------------------------
# child: build one model, time it, measure its memory, print one JSON line
# --------------------------------------------------------------------------------------------------


def build_model(args: dict):
    import memfn

    kw = dict(
        input_size=args["input_size"], hidden_size=args["hidden"], rnn_type="lstm", num_layers=1,
        num_hidden_layers=2, nr_cells=args["cells"], read_heads=args["read_heads"], cell_size=args["cell_size"],
        batch_first=True,
    )  # fmt: skip
    if args["model"] == "dnc":
        return memfn.DNC(**kw)
    knn = dict(knn=args["knn"], **args["memfn_kwargs"])
    if args["knn"] == "faiss":
        knn.update(index=args["index"], num_lists=args["num_lists"], index_checks=args["index_checks"])
    if args["model"] == "sam":
        return memfn.SAM(**kw, sparse_reads=args["sparse_reads"], **knn)
    return memfn.SDNC(**kw, sparse_reads=args["sparse_reads"], temporal_reads=args["temporal_reads"], **knn)


def child_main(args: dict) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    if args["knn"] == "faiss":
        import faiss

        faiss.omp_set_num_threads(args["threads"])
    torch.manual_seed(0)
    model = build_model(args)
    x = torch.randn(args["batch"], args["time"], args["input_size"])

    def forward():
        return model(x, (None, None, None), reset_experience=True)[0]

    def fwd_nograd():
        with torch.no_grad():
            forward()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        forward().sum().backward()

    baseline_kb = _maxrss_kb()
    out: dict = dict(
        torch=torch.__version__, threads=torch.get_num_threads(), load_at_start=os.getloadavg()[0],
        baseline_mb=baseline_kb / 1024, memfn=str(Path(sys.modules["memfn"].__file__).parent),
    )  # fmt: skip
    # One forward first, alone, for its peak; then forward+backward, then the forward's timing (see above).
    out["first_fwd_s"] = _timed(fwd_nograd)
    out["fwd_peak_mb"] = (_maxrss_kb() - baseline_kb) / 1024
    phases = ([] if args["fwd_only"] else [("fb", fwd_bwd)]) + [("fwd", fwd_nograd)]
    for name, fn in phases:
        if f"first_{name}_s" not in out:
            out[f"first_{name}_s"] = _timed(fn)
        first = out[f"first_{name}_s"]
        if first <= args["slow_seconds"]:
            for _ in range(args["warmup"]):
                fn()
            first = _timed(fn)  # size the repeats on a warm call (a first call pays one-off setup)
        out[f"{name}_s"], out[f"{name}_n"], out[f"{name}_min_s"] = _median_time(fn, first, args)
    if not args["fwd_only"]:
        out["fb_peak_mb"] = (_maxrss_kb() - baseline_kb) / 1024
    out["load_at_end"] = os.getloadavg()[0]
    print(RESULT_TAG + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------------
# parent: configs, memory estimates, children, table
# --------------------------------------------------------------------------------------------------


def variants(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(model, knn, index) in table order: per N the sparse models, then the dense DNC."""
    out = []
    for model in [m for m in MODELS if m in args.models and m != "dnc"]:
        for knn in args.knn:
            out += [(model, "exact", "flat")] if knn == "exact" else [(model, "faiss", i) for i in args.index]
    return out + ([("dnc", "dense", "-")] if "dnc" in args.models else [])


def label(knn: str, index: str) -> str:
    return index if knn == "faiss" and index != "flat" else ("faiss" if knn == "faiss" else knn)


def estimate(model: str, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """(forward+backward bytes, forward-only bytes) this child is expected to need."""
    t, b = args.time, args.batch
    if model == "dnc":
        return args.dense_factor * t * b * n * n * 4 + 1e9, args.dense_fwd_factor * b * n * n * 4 + 1e9
    per_row = 4 * args.cell_size + 8 + (24 * args.temporal_reads if model == "sdnc" else 0)
    need = args.sparse_factor * t * b * n * per_row + 1e9
    return need, need / 2


def plan(model: str, n: int, args: argparse.Namespace) -> tuple[str | None, bool]:
    """(reason to skip or None, forward-only?)."""
    if model == "dnc" and n > args.max_dense_cells:
        return f"skipped: N > --max-dense-cells {args.max_dense_cells}", False
    avail = mem_available_bytes()
    fb, fwd = estimate(model, n, args)
    if avail is None or fb <= 0.9 * avail:
        return None, False
    why = f"f+b needs ~{fb / 2**30:.0f} GiB, {avail / 2**30:.1f} GiB available"
    if model == "dnc" and fwd <= 0.9 * avail:
        return None, True
    return f"skipped: {why}; forward-only needs ~{fwd / 2**30:.1f} GiB", False


def run_child(model: str, knn: str, index: str, n: int, fwd_only: bool, args: argparse.Namespace) -> dict:
    # The child gets every option by name, with this config's model, knn, index and N.
    payload = dict(vars(args), model=model, knn=knn, index=index, cells=n, fwd_only=fwd_only,
                   memfn_kwargs=json.loads(args.memfn_kwargs))  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    if args.glibc_keep_memory:
        env["GLIBC_TUNABLES"] = KEEP_MEMORY_TUNABLES
    if args.memfn_path:
        env["PYTHONPATH"] = os.pathsep.join([args.memfn_path, *filter(None, [env.get("PYTHONPATH")])])
    head = dict(model=model, knn=knn, index=index, cells=n, fwd_only=fwd_only)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE), "--_child", json.dumps(payload)],
            capture_output=True, text=True, env=env, cwd=str(HERE.parent), timeout=args.timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return dict(head, error=f"timed out after {args.timeout:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return dict(head, **json.loads(line[len(RESULT_TAG) :]), child_wall_s=time.perf_counter() - start)
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return dict(head, error=f"child exited {proc.returncode}:\n{tail}")


def _ratio(ref: dict | None, r: dict, key: str) -> float | None:
    if not ref or key not in ref or key not in r or r[key] <= 0:
        return None
    return ref[key] / r[key] if ref[key] > 0 else None


def print_table(results: list[dict], steps: int, out=sys.stdout) -> None:
    head = (
        "| model | knn | N | f+b ms/step | fwd ms/step | peak MB | fwd peak MB | f+b x DNC | fwd x DNC "
        "| peak x DNC | fwd peak x DNC | reps fwd/f+b |"
    )
    print(head, file=out)
    print("|" + "---|" * (head.count("|") - 1), file=out)
    dense = {r["cells"]: r for r in results if r["model"] == "dnc" and "fwd_s" in r}
    for r in results:
        name, knn = r["model"].upper(), label(r["knn"], r["index"])
        if "fwd_s" not in r:
            why = r.get("skipped") or r["error"].splitlines()[0]
            print(f"| {name} | {knn} | {r['cells']} | {why} |" + " |" * 8, file=out)
            continue
        ref = dense.get(r["cells"]) if r["model"] != "dnc" else None
        ms = {k: r[k] / steps * 1e3 if k in r else None for k in ("fb_s", "fwd_s")}
        fb_text = _fmt(ms["fb_s"], ".2f", "(fwd only)")
        ratios = " | ".join(_fmt(_ratio(ref, r, k), ".1f") for k in ("fb_s", "fwd_s", "fb_peak_mb", "fwd_peak_mb"))
        print(
            f"| {name} | {knn} | {r['cells']} | {fb_text} | {ms['fwd_s']:.2f} | {_fmt(r.get('fb_peak_mb'), '.0f')} "
            f"| {r['fwd_peak_mb']:.0f} | {ratios} | {r['fwd_n']}/{r.get('fb_n', '-')} |",
            file=out,
        )


def _slope(points: list[tuple[int, float]]) -> float:
    xs, ys = [math.log(n) for n, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def scaling_lines(results: list[dict]) -> list[str]:
    """The scaling exponent of ms/step in N of each (model, knn, fwd|fb) measured at two N or more."""
    groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in results:
        for key in ("fb_s", "fwd_s"):
            if key in r:
                groups.setdefault((r["model"], label(r["knn"], r["index"]), key[:-2]), []).append((r["cells"], r[key]))
    lines = []
    for (model, knn, what), points in groups.items():
        points.sort()
        if len(points) >= 2:
            ns = ",".join(str(n) for n, _ in points)
            last = f"N^{_slope(points[-2:]):.2f} from {points[-2][0]} to {points[-1][0]}"
            lines.append(f"# {model} {knn} {what}: ms/step ~ N^{_slope(points):.2f} over N={ns}; {last}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--cells", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="nr_cells values")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--knn", nargs="+", choices=KNNS, default=list(KNNS), help="nearest-neighbour backends")
    ap.add_argument(
        "--index", nargs="+", choices=INDEXES, default=["flat"],
        help="faiss indexes to run with --knn faiss (ivf and hnsw rebuild an index per step: slow)",
    )  # fmt: skip
    ap.add_argument("--num-lists", type=int, default=None, help="ivf lists (default: memfn's, N // 100)")
    ap.add_argument("--index-checks", type=int, default=None, help="ivf nprobe / hnsw efSearch (default: memfn's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--time", type=int, default=32, help="sequence length T")
    ap.add_argument("--hidden", type=int, default=100, help="LSTM controller hidden size")
    ap.add_argument("--input-size", type=int, default=8)
    ap.add_argument("--cell-size", type=int, default=32)
    ap.add_argument("--read-heads", type=int, default=4)
    ap.add_argument("--sparse-reads", type=int, default=4)
    ap.add_argument("--temporal-reads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch, OpenMP and faiss threads in the children")
    for flag, kind, default, text in TIMING_OPTIONS + MEMORY_OPTIONS:
        ap.add_argument(flag, type=kind, default=default, help=text)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a child is killed")
    ap.add_argument(
        "--memfn-path", default=None,
        help="directory holding a memfn/ package to benchmark instead of the installed one (first on the children's "
        "PYTHONPATH), e.g. a snapshot that concurrent edits cannot change: git archive HEAD memfn | tar -x -C DIR",
    )  # fmt: skip
    ap.add_argument(
        "--memfn-kwargs", default="{}",
        help="extra keyword arguments for memfn.SAM / memfn.SDNC (not DNC), as JSON, e.g. '{\"fast\": false}'",
    )  # fmt: skip
    ap.add_argument("--max-load", type=float, default=0, help="before each child, wait for the load average to "
                    "fall below this (0: never wait)")  # fmt: skip
    ap.add_argument("--max-wait", type=float, default=120, help="wait at most this many seconds for --max-load")
    ap.add_argument(
        "--glibc-keep-memory", action="store_true",
        help=f"run the children with GLIBC_TUNABLES={KEEP_MEMORY_TUNABLES} (no page-fault churn on big tensors)",
    )  # fmt: skip
    ap.add_argument("--json", default=None, help="also write all raw results to this JSON file")
    args = ap.parse_args()
    if args._child:
        child_main(json.loads(args._child))
        return

    import torch

    print(
        f"# torch {torch.__version__} ({sys.executable}), {os.cpu_count()} CPUs, children use {args.threads} "
        f"thread(s); LSTM hidden {args.hidden}, input {args.input_size}, B={args.batch}, T={args.time}, "
        f"W={args.cell_size}, R={args.read_heads}, K={args.sparse_reads}, L={args.temporal_reads} (SDNC)",
        flush=True,
    )
    results: list[dict] = []
    for n in args.cells:
        for model, knn, index in variants(args):
            head = dict(model=model, knn=knn, index=index, cells=n)
            skip, fwd_only = plan(model, n, args)
            if skip:
                results.append(dict(head, skipped=skip))
                print(f"{model} {label(knn, index)} N={n}: {skip}", flush=True)
                continue
            wait_for_quiet(args)
            r = run_child(model, knn, index, n, fwd_only, args)
            results.append(r)
            if "error" in r:
                print(f"{model} {label(knn, index)} N={n}: ERROR {r['error']}", flush=True)
                continue
            fb = f"f+b {r['fb_s'] / args.time * 1e3:.2f} ms/step, " if "fb_s" in r else "forward only (f+b won't fit), "
            print(
                f"{model} {label(knn, index)} N={n}: {fb}fwd {r['fwd_s'] / args.time * 1e3:.2f} ms/step, "
                f"peak {_fmt(r.get('fb_peak_mb'), '.0f')} MB (fwd {r['fwd_peak_mb']:.0f} MB), reps "
                f"{r['fwd_n']}/{r.get('fb_n', '-')}, load {r['load_at_start']:.2f}, child {r['child_wall_s']:.0f} s",
                flush=True,
            )
    print()
    ok = [r for r in results if "fwd_s" in r]
    print(
        f"# memfn from {', '.join(sorted({r['memfn'] for r in ok}))}; extra SAM/SDNC kwargs {args.memfn_kwargs}"
        + (f"; GLIBC_TUNABLES={KEEP_MEMORY_TUNABLES}" if args.glibc_keep_memory else "")
    )
    if ok:
        loads = [r["load_at_start"] for r in ok] + [r["load_at_end"] for r in ok]
        print(f"# 1-minute load average during the run: {min(loads):.2f} .. {max(loads):.2f} on {os.cpu_count()} CPUs")
    print(
        "# ms/step: median T-step call / T; peak MB: child peak RSS over its post-build baseline (after the f+b "
        "calls; fwd: after one forward); x DNC: dense DNC / this at the same N (> 1: faster or leaner); reps: repeats"
    )
    print()
    print_table(results, args.time)
    print()
    print("\n".join(scaling_lines(results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
