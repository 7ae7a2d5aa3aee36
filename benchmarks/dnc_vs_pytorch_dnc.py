"""memfn.DNC (eager and compiled) against pytorch-dnc's ``dnc.DNC`` 1.1.0, side by side in one run.

    python benchmarks/dnc_vs_pytorch_dnc.py                      # every config (takes a while)
    python benchmarks/dnc_vs_pytorch_dnc.py --batch 32 --cells 64 --variants eager dnc
    python benchmarks/dnc_vs_pytorch_dnc.py --dnc-python /tmp/dncref/venv/bin/python --json out.json

Config (issue 3): LSTM controller, hidden 128, num_layers 1, num_hidden_layers 2, cell_size 32,
read_heads 4, input_size 64, T=32, batch in {8, 32}, nr_cells in {16, 64, 256, 1024}.

Every (config, variant) runs in a fresh child process that shares nothing with the others, so
its peak memory is its own. Variants: ``eager`` = ``memfn.DNC``; ``compiled`` =
``memfn.DNC(..., compile=True)``; ``dnc`` = ``dnc.DNC`` from the ``dnc`` package, run by
``--dnc-python`` (by default this interpreter if ``import dnc`` works, else
``/tmp/dncref/venv/bin/python`` if it exists, else the dnc column is skipped).

Timing, per child: one first call of forward+backward (for ``compiled`` that is the compile, and
it is reported as "1st f+b s"; compiled children use a fresh, empty inductor cache unless
``--warm-cache``), warm-up calls, then the median of several repeats of (a) forward under
``torch.no_grad()`` (for ``compiled`` its first no-grad call compiles again and is reported as
"1st fwd s") and (b) forward + ``output.sum().backward()``. The number of repeats adapts to the
call's duration (at most ``--repeats``, at least ``--min-repeats``, about ``--budget`` seconds
per measurement), so slow cases such as dnc at N=1024, B=32 (~40 s a call) get 1-2 repeats.

Memory, per child: "peak MB" is the child's whole-life peak RSS (``ru_maxrss``) minus its RSS peak
right after importing and building the model and inputs -- exactly what a baseline child that
only imports and builds would report, so no extra process is needed. It includes everything the
run needed on top of the model: autograd's saved tensors, allocator caches and, for ``compiled``,
dynamo/inductor's transient compile memory. "steady MB" leaves the compile transient out: after all
timing, the kernel's RSS high-water mark is reset (``/proc/self/clear_refs``), one more
forward+backward runs, and its ``VmHWM`` minus the RSS right after import+build is reported (it
still counts what stays resident: compiled code, caches, memory the allocator kept). Before each
child, its memory is estimated from the link-matrix size (``--mem-factor`` * T * B * N^2 * 4 bytes)
and the child is skipped with a message if that does not fit in ``MemAvailable``.

At large N most of the time can go to page faults: every new [B, N, N] tensor above glibc's mmap
threshold is a fresh mapping that the kernel zero-fills page by page, and each is unmapped again
when freed. ``--glibc-keep-memory`` runs every child (dnc's too) with ``GLIBC_TUNABLES`` that make
malloc keep and reuse such blocks, to see how much of a time is the allocator rather than the maths.

Ratios are memfn throughput / dnc throughput (= dnc time / memfn time; > 1 means memfn is faster)
and memfn peak / dnc peak for memory (< 1 means memfn is leaner). CPU timings are noisy on a
shared machine: the 1-minute load average at each child's start is recorded in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_DNC_VENV_PYTHON = "/tmp/dncref/venv/bin/python"
VARIANTS = ("eager", "compiled", "dnc")
RESULT_TAG = "@@RESULT@@ "
# malloc never returns big blocks to the kernel and never mmaps them, so they are reused warm.
KEEP_MEMORY_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


# --------------------------------------------------------------------------------------------------
# child: build one model, time it, measure its memory, print one JSON line
# --------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _maxrss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False if not possible here."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_time(fn, first: float, args: dict) -> tuple[float, int, float]:
    """(median, n, min) of n timed calls, n chosen from how long one call took (``first``)."""
    n = int(args["budget"] // max(first, 1e-6))
    n = max(args["min_repeats"], min(args["repeats"], n))
    if args["slow_repeats"] and first > args["slow_seconds"]:
        n = args["slow_repeats"]
    times = [_timed(fn) for _ in range(n)]
    return statistics.median(times), n, min(times)


def child_main(args: dict) -> None:
    import torch

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    variant, b, n = args["variant"], args["batch"], args["cells"]
    kw = dict(
        input_size=args["input_size"], hidden_size=args["hidden"], rnn_type="lstm", num_layers=args["layers"],
        num_hidden_layers=args["hidden_layers"], nr_cells=n, read_heads=args["read_heads"],
        cell_size=args["cell_size"], batch_first=True, gpu_id=-1,
    )  # fmt: skip
    if variant == "dnc":
        import dnc

        model = dnc.DNC(**kw)
        impl = f"dnc {getattr(dnc, '__version__', '')} at {Path(dnc.__file__).parent}"
    else:
        import memfn

        model = memfn.DNC(**kw, compile=variant == "compiled", **args.get("memfn_kwargs", {}))
        impl = f"memfn at {Path(memfn.__file__).parent} {args.get('memfn_kwargs') or ''}".rstrip()
    x = torch.randn(b, args["steps"], args["input_size"])

    def forward():
        # reset_experience=True: every call starts from a fresh memory, as a training step would.
        return model(x, (None, None, None), reset_experience=True)[0]

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        forward().sum().backward()

    def fwd_nograd():
        with torch.no_grad():
            forward()

    baseline_kb = _maxrss_kb()  # = what a child that only imports and builds would peak at
    baseline_rss_kb = _status_kb("VmRSS")
    load = os.getloadavg()[0]
    out: dict = dict(
        variant=variant, batch=b, cells=n, torch=torch.__version__, threads=torch.get_num_threads(),
        python=sys.executable, impl=impl, load_at_start=load,
    )  # fmt: skip

    out["first_fb_s"] = _timed(fwd_bwd)
    out["first_fwd_s"] = _timed(fwd_nograd)
    first_fb, first_fwd = out["first_fb_s"], out["first_fwd_s"]
    if variant == "compiled":  # the first calls compiled; time a second call to size the repeats
        first_fb, first_fwd = _timed(fwd_bwd), _timed(fwd_nograd)
    warm = args["warmup"] if first_fb <= args["slow_seconds"] else 0
    for _ in range(warm):
        fwd_bwd()
        fwd_nograd()
    out["fwd_s"], out["fwd_n"], out["fwd_min_s"] = _median_time(fwd_nograd, first_fwd, args)
    out["fb_s"], out["fb_n"], out["fb_min_s"] = _median_time(fwd_bwd, first_fb, args)
    if variant == "compiled":
        from torch._dynamo.utils import counters

        out["graphs"] = counters["stats"]["unique_graphs"]

    out["peak_mb"] = (_maxrss_kb() - baseline_kb) / 1024
    out["baseline_mb"] = baseline_kb / 1024
    if _reset_peak_rss():  # the high-water mark restarts at the current RSS
        fwd_bwd()
        out["steady_mb"] = (_status_kb("VmHWM") - baseline_rss_kb) / 1024
    else:
        out["steady_mb"] = None
    out["load_at_end"] = os.getloadavg()[0]
    print(RESULT_TAG + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------------
# parent: choose interpreters, estimate memory, launch children, print the table
# --------------------------------------------------------------------------------------------------


def _imports_dnc(python: str) -> bool:
    if python == sys.executable:
        try:
            import dnc  # noqa: F401

            return True
        except Exception:
            return False
    r = subprocess.run([python, "-c", "import dnc"], capture_output=True)
    return r.returncode == 0


def resolve_dnc_python(flag: str | None) -> tuple[str | None, str]:
    """(interpreter or None, message)."""
    if flag:
        if _imports_dnc(flag):
            return flag, f"dnc from --dnc-python {flag}"
        return None, f"--dnc-python {flag} cannot `import dnc`: skipping the dnc column"
    if _imports_dnc(sys.executable):
        return sys.executable, "dnc importable in this interpreter"
    if os.path.exists(DEFAULT_DNC_VENV_PYTHON) and _imports_dnc(DEFAULT_DNC_VENV_PYTHON):
        return DEFAULT_DNC_VENV_PYTHON, f"dnc from {DEFAULT_DNC_VENV_PYTHON}"
    return None, (
        "`dnc` is not importable here and /tmp/dncref/venv/bin/python does not exist: skipping the dnc "
        "column (python -m venv /tmp/dncref/venv && /tmp/dncref/venv/bin/pip install torch && "
        "/tmp/dncref/venv/bin/pip install --no-deps dnc==1.1.0)"
    )


def mem_available_bytes() -> int | None:
    # Imported here, not at the top: children run by --dnc-python may not have memfn.
    from memfn._resources import available_bytes

    return available_bytes()


def estimate_bytes(b: int, n: int, args: argparse.Namespace) -> float:
    # Dominated by the [B, N, N] link matrix kept for backward at every step.
    return args.mem_factor * args.steps * b * n * n * 4 + 1.5e9


def wait_for_quiet(args: argparse.Namespace) -> None:
    """On a shared machine: wait (at most --max-wait s) for the 1-minute load average to fall below --max-load."""
    if not args.max_load:
        return
    deadline = time.monotonic() + args.max_wait
    while os.getloadavg()[0] > args.max_load and time.monotonic() < deadline:
        time.sleep(5)


def run_child(python: str, variant: str, b: int, n: int, args: argparse.Namespace) -> dict:
    payload = dict(
        variant=variant, batch=b, cells=n, steps=args.steps, input_size=args.input_size, hidden=args.hidden,
        layers=args.layers, hidden_layers=args.hidden_layers, read_heads=args.read_heads,
        cell_size=args.cell_size, threads=args.threads, repeats=args.repeats, min_repeats=args.min_repeats,
        warmup=args.warmup, budget=args.budget, slow_seconds=args.slow_seconds, slow_repeats=args.slow_repeats,
        memfn_kwargs=json.loads(args.memfn_kwargs),
    )  # fmt: skip
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if args.glibc_keep_memory:
        env["GLIBC_TUNABLES"] = KEEP_MEMORY_TUNABLES
    if args.memfn_path and variant != "dnc":
        env["PYTHONPATH"] = os.pathsep.join([args.memfn_path, *filter(None, [env.get("PYTHONPATH")])])
    cache_dir = None
    if variant == "compiled" and not args.warm_cache:
        cache_dir = tempfile.mkdtemp(prefix="memfn_bench_inductor_")
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # cold compile, as a new user sees it
        env["TRITON_CACHE_DIR"] = os.path.join(cache_dir, "triton")
    # Run the child from benchmarks/ so a checkout's memfn/ is never shadowed or picked up by accident
    # (the installed package, editable or not, is what is imported).
    cmd = [python, str(HERE), "--_child", json.dumps(payload)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(HERE.parent), timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(variant=variant, batch=b, cells=n, error=f"timed out after {args.timeout} s")
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    wall = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG) :])
            res["child_wall_s"] = wall
            return res
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return dict(variant=variant, batch=b, cells=n, error=f"child exited {proc.returncode}:\n{tail}")


def _fmt(v, spec: str, dash: str = "-") -> str:
    return dash if v is None else format(v, spec)


def print_table(results: dict, configs: list, variants: list, out=sys.stdout) -> None:
    head = (
        "| B | N | variant | fwd ms | fwd x | f+b ms | f+b x | 1st f+b s | 1st fwd s | reps fwd/f+b "
        "| peak MB | peak x | steady MB | steady x |"
    )
    print(head, file=out)
    print("|" + "---|" * (head.count("|") - 1), file=out)
    for b, n in configs:
        ref = results.get((b, n, "dnc"))
        ref_ok = ref is not None and "error" not in ref and "skipped" not in ref
        for v in variants:
            r = results.get((b, n, v))
            if r is None:
                continue
            if "skipped" in r or "error" in r:
                why = r.get("skipped") or r["error"].splitlines()[0]
                print(f"| {b} | {n} | {v} | {why} |" + " |" * 10, file=out)
                continue
            fx = fbx = px = fbmx = None
            if ref_ok:
                fx, fbx = ref["fwd_s"] / r["fwd_s"], ref["fb_s"] / r["fb_s"]
                px = r["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else None
                if r.get("steady_mb") is not None and ref.get("steady_mb"):
                    fbmx = r["steady_mb"] / ref["steady_mb"]
            first_fwd = r["first_fwd_s"] if v == "compiled" else None
            print(
                f"| {b} | {n} | {v} | {r['fwd_s'] * 1e3:.1f} | {_fmt(fx, '.2f')} | {r['fb_s'] * 1e3:.1f} "
                f"| {_fmt(fbx, '.2f')} | {r['first_fb_s']:.1f} | {_fmt(first_fwd, '.1f')} "
                f"| {r['fwd_n']}/{r['fb_n']} | {r['peak_mb']:.0f} | {_fmt(px, '.2f')} "
                f"| {_fmt(r.get('steady_mb'), '.0f')} | {_fmt(fbmx, '.2f')} |",
                file=out,
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="batch sizes (default: 8 32)")
    ap.add_argument("--cells", type=int, nargs="+", default=[16, 64, 256, 1024], help="nr_cells values")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=32, help="sequence length T (default 32)")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1, help="num_layers")
    ap.add_argument("--hidden-layers", type=int, default=2, help="num_hidden_layers")
    ap.add_argument("--read-heads", type=int, default=4)
    ap.add_argument("--cell-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=10, help="at most this many timed repeats")
    ap.add_argument("--min-repeats", type=int, default=3, help="at least this many timed repeats")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up calls after the first call")
    ap.add_argument("--budget", type=float, default=10.0, help="about this many seconds per measurement")
    ap.add_argument(
        "--slow-seconds", type=float, default=15.0, help="a call slower than this gets no warm-up and --slow-repeats"
    )
    ap.add_argument("--slow-repeats", type=int, default=1, help="repeats for calls slower than --slow-seconds")
    ap.add_argument("--dnc-python", default=None, help="interpreter that can `import dnc` (default: see above)")
    ap.add_argument(
        "--mem-factor", type=float, default=3.0,
        help="memory estimate = this * T*B*N^2*4 bytes + 1.5 GB; a child that would not fit in MemAvailable is skipped",
    )  # fmt: skip
    ap.add_argument(
        "--max-load",
        type=float,
        default=0,
        help="before each child, wait for the load average to fall below this (0: never wait)",
    )
    ap.add_argument("--max-wait", type=float, default=120, help="wait at most this many seconds for --max-load")
    ap.add_argument(
        "--glibc-keep-memory",
        action="store_true",
        help=f"run every child with GLIBC_TUNABLES={KEEP_MEMORY_TUNABLES} (no page-fault churn on big tensors)",
    )
    ap.add_argument(
        "--memfn-path",
        default=None,
        help="directory holding a memfn/ package to benchmark instead of the installed one (put first on the "
        "children's PYTHONPATH), e.g. a snapshot: git archive COMMIT memfn | tar -x -C DIR",
    )
    ap.add_argument(
        "--memfn-kwargs",
        default="{}",
        help="extra keyword arguments for memfn.DNC, as JSON (e.g. '{\"checkpoint_every\": 6}')",
    )
    ap.add_argument("--warm-cache", action="store_true", help="let compiled children reuse the inductor cache")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a child is killed")
    ap.add_argument("--json", default=None, help="also write all raw results to this JSON file")
    args = ap.parse_args()
    if args._child:
        child_main(json.loads(args._child))
        return

    import torch

    configs = [(b, n) for b in args.batch for n in args.cells]
    variants = list(args.variants)
    dnc_python = None
    if "dnc" in variants:
        dnc_python, msg = resolve_dnc_python(args.dnc_python)
        print(f"# {msg}", flush=True)
    print(
        f"# torch {torch.__version__} ({sys.executable}), {torch.get_num_threads()} threads by default, "
        f"{os.cpu_count()} CPUs; children use {args.threads or 'the default number of'} threads"
        + (f"; GLIBC_TUNABLES={KEEP_MEMORY_TUNABLES}" if args.glibc_keep_memory else ""),
        flush=True,
    )
    print(
        f"# config: LSTM hidden {args.hidden}, num_layers {args.layers}, num_hidden_layers {args.hidden_layers}, "
        f"cell_size {args.cell_size}, read_heads {args.read_heads}, input_size {args.input_size}, T={args.steps}",
        flush=True,
    )
    results: dict = {}
    for b, n in configs:
        for v in variants:
            if v == "dnc" and dnc_python is None:
                continue
            python = dnc_python if v == "dnc" else sys.executable
            need, avail = estimate_bytes(b, n, args), mem_available_bytes()
            if avail is not None and need > 0.9 * avail:
                msg = f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
                results[(b, n, v)] = dict(variant=v, batch=b, cells=n, skipped=msg)
                print(f"B={b} N={n} {v}: {msg}", flush=True)
                continue
            wait_for_quiet(args)
            r = run_child(python, v, b, n, args)
            results[(b, n, v)] = r
            if "error" in r:
                print(f"B={b} N={n} {v}: ERROR {r['error']}", flush=True)
            else:
                print(
                    f"B={b} N={n} {v}: fwd {r['fwd_s'] * 1e3:.1f} ms (min {r['fwd_min_s'] * 1e3:.1f}), "
                    f"f+b {r['fb_s'] * 1e3:.1f} ms (min {r['fb_min_s'] * 1e3:.1f}), "
                    f"1st f+b {r['first_fb_s']:.1f} s, peak {r['peak_mb']:.0f} MB, "
                    f"steady {_fmt(r['steady_mb'], '.0f')} MB (load {r['load_at_start']:.2f}, torch {r['torch']}, "
                    f"{r['threads']} threads, child {r['child_wall_s']:.0f} s)",
                    flush=True,
                )
    print()
    ok = [r for r in results.values() if "error" not in r and "skipped" not in r]
    versions = sorted({(r["variant"], r["torch"], r["threads"]) for r in ok})
    print("# " + "; ".join(f"{v}: torch {t}, {th} threads" for v, t, th in versions))
    print(
        "# ms: median wall time of one T-step call; x: memfn throughput / dnc throughput (> 1: memfn faster); "
        "peak MB: child peak RSS minus its peak after import+build; steady MB: the same for one "
        "forward+backward after warm-up (compile transients excluded); MB x: memfn / dnc (< 1: memfn leaner); "
        "1st f+b / 1st fwd s: first calls (compile); reps: timed repeats behind each median."
    )
    if ok:
        loads = [r["load_at_start"] for r in ok] + [r["load_at_end"] for r in ok]
        print(f"# 1-minute load average during the run: {min(loads):.2f} .. {max(loads):.2f} on {os.cpu_count()} CPUs")
    print()
    print_table(results, configs, variants)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r) for r in results.values()], f, indent=1)


if __name__ == "__main__":
    main()
