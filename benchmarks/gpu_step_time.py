"""Forward+backward and forward-only time per call on a GPU: memfn.DNC eager, compiled and compiled
with CUDA graphs, pytorch-dnc's ``dnc.DNC`` 1.1.0 if importable, and SAM/SDNC against the dense DNC.

    python benchmarks/gpu_step_time.py                          # on cuda, every config
    python benchmarks/gpu_step_time.py --json out.json --budget 300
    python benchmarks/gpu_step_time.py --device cpu --quick     # the script's logic, tiny sizes

Dense config (that of benchmarks/dnc_vs_pytorch_dnc.py): LSTM controller, hidden 128,
num_hidden_layers 2, cell_size 32, read_heads 4, input 64, T=32, batch in {8, 32}, nr_cells in
{16, 64, 256}. Variants: ``eager`` = ``memfn.DNC``; ``compiled`` = ``memfn.DNC(..., compile=True)``;
``graphs`` = ``rnn.compile(mode="reduce-overhead")`` (inductor with CUDA graphs); ``dnc`` =
``dnc.DNC`` (``gpu_id`` set from ``--device``). Sparse: SAM and SDNC eager (the fast path) at
nr_cells 1024 and 65536 against the dense DNC eager at 1024, batch 8.

Timing: one first call of forward + ``output.sum().backward()`` (the compile, for the compiled
variants) is reported apart; then the median of repeats of forward+backward and of forward under
``torch.no_grad()``, each timed with CUDA events around the call and a synchronize (wall clock
on the CPU). Each variant runs inside try/except: a failing variant prints its error on one line
and the table goes on. ``--budget`` seconds: once spent, the remaining cases are skipped (listed).
Ratios are the reference's time / the variant's time (> 1: faster than the reference), the
reference being ``dnc`` where it ran, else ``eager``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback

import torch

import memfn

DENSE = dict(input_size=64, hidden_size=128, rnn_type="lstm", num_layers=1, num_hidden_layers=2, cell_size=32,
             read_heads=4, batch_first=True)  # fmt: skip
SPARSE_EXTRA = {"SAM": dict(sparse_reads=4), "SDNC": dict(sparse_reads=4, temporal_reads=4)}
VARIANTS = ("eager", "compiled", "graphs", "dnc")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device) -> float:
    """Seconds of one call: CUDA events on a GPU (after a synchronize), wall clock on the CPU."""
    if device.type == "cuda":
        sync(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        sync(device)
        return start.elapsed_time(end) / 1000
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def build(kind: str, variant: str, nr_cells: int, device: torch.device, sizes: dict):
    kwargs = {**DENSE, **sizes, "nr_cells": nr_cells}
    if variant == "dnc":
        import dnc  # pytorch-dnc 1.1.0

        gpu_id = (device.index or 0) if device.type == "cuda" else -1
        return getattr(dnc, kind)(**kwargs, **SPARSE_EXTRA.get(kind, {}), gpu_id=gpu_id)
    cls = getattr(memfn, kind)
    rnn = cls(**kwargs, **SPARSE_EXTRA.get(kind, {}), device=device, compile=variant == "compiled")
    if variant == "graphs":
        rnn.compile(mode="reduce-overhead")
    return rnn


def measure(kind, variant, batch, nr_cells, device, args, sizes) -> dict:
    torch.manual_seed(0)
    rnn = build(kind, variant, nr_cells, device, sizes)
    x = torch.randn(batch, args.time, sizes.get("input_size", DENSE["input_size"]), device=device)

    def fwd_bwd():
        out = rnn(x, reset_experience=True)[0] if variant == "dnc" else rnn(x)[0]
        out.sum().backward()

    def fwd():
        with torch.no_grad():
            rnn(x, reset_experience=True) if variant == "dnc" else rnn(x)

    row = {"first_fb_s": time_call(fwd_bwd, device), "first_fwd_s": time_call(fwd, device)}
    for name, fn in (("fb_s", fwd_bwd), ("fwd_s", fwd)):
        for _ in range(args.warmup):
            fn()
        row[name] = statistics.median(time_call(fn, device) for _ in range(args.repeats))
    if device.type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def cases(args):
    for batch in args.batches:
        for n in args.cells:
            for variant in args.variants:
                yield ("DNC", variant, batch, n)
    if not args.no_sparse:
        for n in args.sparse_cells:
            for kind in ("SAM", "SDNC"):
                yield (kind, "eager", args.sparse_batch, n)
        yield ("DNC", "eager", args.sparse_batch, args.sparse_cells[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (test the logic)")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--cells", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--sparse-cells", type=int, nargs="+", default=[1024, 65536])
    p.add_argument("--sparse-batch", type=int, default=8)
    p.add_argument("--no-sparse", action="store_true")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--time", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds; later cases are skipped")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sizes: dict = {}
    if args.quick:
        args.batches, args.cells, args.sparse_cells = [2], [8], [32, 64]
        args.sparse_batch, args.time, args.repeats, args.warmup = 2, 4, 2, 1
        sizes = dict(input_size=8, hidden_size=16, cell_size=8, read_heads=2)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA available: use --device cpu (with --quick to test the logic)")
        return 2
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)  # fmt: skip
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # same float32 maths as the CPU and pytorch-dnc
    start = time.perf_counter()
    results, skipped = [], []
    for kind, variant, batch, n in cases(args):
        key = dict(kind=kind, variant=variant, batch=batch, nr_cells=n)
        if time.perf_counter() - start > args.budget:
            skipped.append(key)
            continue
        try:
            row = {**key, **measure(kind, variant, batch, n, device, args, sizes)}
            fb_ms, fwd_ms = row["fb_s"] * 1e3, row["fwd_s"] * 1e3
            print(f"  {kind} {variant} B={batch} N={n}: f+b {fb_ms:.2f} ms, fwd {fwd_ms:.2f} ms,"
                  f" 1st f+b {row['first_fb_s']:.2f} s", flush=True)  # fmt: skip
        except Exception as e:  # one failing variant must not stop the table
            msg = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[0][:300]
            print(f"  {kind} {variant} B={batch} N={n}: FAILED {msg}", flush=True)
            row = {**key, "error": msg}
        results.append(row)
        if args.json:  # after every case, so a run stopped by a timeout keeps what it measured
            write_json(args, device, results, skipped)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    print_table(results)
    if skipped:
        print(f"budget of {args.budget:.0f} s spent; skipped: " + ", ".join(
            f"{k['kind']}/{k['variant']}/B{k['batch']}/N{k['nr_cells']}" for k in skipped))  # fmt: skip
    if args.json:
        write_json(args, device, results, skipped)
    return 0


def write_json(args, device, results, skipped) -> None:
    with open(args.json, "w") as f:
        json.dump({"device": str(device), "torch": torch.__version__, "quick": args.quick, "results": results,
                   "skipped": skipped}, f, indent=1)  # fmt: skip


def print_table(results) -> None:
    ok = {(r["kind"], r["variant"], r["batch"], r["nr_cells"]): r for r in results if "error" not in r}
    print(f"\n{'model':5} {'variant':9} {'B':>3} {'N':>6} {'f+b ms':>9} {'fwd ms':>9} {'1st f+b s':>9} "
          f"{'f+b x':>6} {'fwd x':>6}  reference")  # fmt: skip
    for r in results:
        head = f"{r['kind']:5} {r['variant']:9} {r['batch']:>3} {r['nr_cells']:>6}"
        if "error" in r:
            print(f"{head} FAILED: {r['error'][:100]}")
            continue
        if r["kind"] == "DNC":
            ref_variant = "dnc" if ("DNC", "dnc", r["batch"], r["nr_cells"]) in ok else "eager"
            ref = ok.get(("DNC", ref_variant, r["batch"], r["nr_cells"]))
        else:  # sparse against the dense DNC eager at the smallest sparse size
            ref_variant = "DNC eager"
            smallest = min(x["nr_cells"] for x in results if x["kind"] != "DNC")
            ref = ok.get(("DNC", "eager", r["batch"], smallest))
        fb_x = f"{ref['fb_s'] / r['fb_s']:6.2f}" if ref else "     -"
        fwd_x = f"{ref['fwd_s'] / r['fwd_s']:6.2f}" if ref else "     -"
        ref_name = f"{ref_variant} N={ref['nr_cells']}" if ref else "-"
        print(
            f"{head} {r['fb_s'] * 1e3:9.2f} {r['fwd_s'] * 1e3:9.2f} {r['first_fb_s']:9.2f} {fb_x} {fwd_x}  {ref_name}"
        )


if __name__ == "__main__":
    sys.exit(main())
