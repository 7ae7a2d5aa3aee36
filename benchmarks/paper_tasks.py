"""DNC vs SAM vs SDNC on the papers' tasks (issue 17), the same time budget each, one table.

    python benchmarks/paper_tasks.py                                  # every task x memory, 180 s each
    python benchmarks/paper_tasks.py --tasks associative_recall key_value --seconds 60 --memories dnc sam

Each (task, memory) pair trains with the task script's loop (``memfn.tasks.train``, in this
process, one thread) on the task's command below until ``--seconds`` of training or
``--iterations``, whichever comes first, then scores 100 fresh sequences at the trained length and
at the task's longer lengths (2x and, where the task has it, 4x; the graph tasks: larger graphs).
The sparse memories get ``--sparse-cells`` cells and 4 sparse (and, SDNC, temporal) reads; the rest of
the command is the same for the three memories. Metrics: ``bit_error_rate`` (fraction of wrong answer
bits, lower is better) and ``edge_accuracy`` (fraction of right answer edges, higher is better).

``--evaluate CHECKPOINT`` instead scores a task script's checkpoint at ``--lengths``, optionally
with a larger memory (``--mem-slot``): the weights of the DNC, SAM and SDNC do not depend on the
number of cells, so a model trained with few cells runs unchanged on many (as in the DNC and SAM
papers' generalisation tests):

    python benchmarks/paper_tasks.py --evaluate checkpoints/ar_sam --mem-slot 65536 --lengths 6 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The command behind each task's learning run (README, "The papers' tasks"), less the time budget.
COMMANDS = {
    "repeat_copy": "-sequence_max_length 6 -nhid 128 -read_heads 2 -mem_slot 16 -mem_size 16 -batch_size 32 -lr 0.003",
    "associative_recall": "-sequence_max_length 6 -nhid 128 -read_heads 1 -mem_slot 32 -mem_size 16 -batch_size 32 "
    "-lr 0.003",
    "priority_sort": "-sequence_max_length 5 -nhid 128 -read_heads 2 -mem_slot 16 -mem_size 16 -batch_size 32 "
    "-lr 0.003",
    "key_value": "-input_size 11 -sequence_max_length 6 -nhid 128 -read_heads 1 -mem_slot 32 -mem_size 16 "
    "-batch_size 32 -lr 0.003",
    "graph_traversal": "-sequence_max_length 4 -curriculum_increment 1 -curriculum_freq 300 -nhid 128 -read_heads 1 "
    "-mem_slot 32 -mem_size 32 -batch_size 32 -lr 0.003",
    "shortest_path": "-sequence_max_length 4 -curriculum_increment 1 -curriculum_freq 300 -nhid 128 -read_heads 2 "
    "-mem_slot 32 -mem_size 32 -batch_size 32 -lr 0.003",
}
#: Longer (larger) held-out instances, as multiples of the trained length; graphs: 10 and 12 nodes.
EVAL = {"repeat_copy": (1, 2, 4), "associative_recall": (1, 2, 4), "priority_sort": (1, 2), "key_value": (1, 2, 4)}
GRAPH_EVAL = (10, 12)


def memory_options(memory: str, cells: int) -> list[str]:
    if memory == "dnc":
        return []
    extra = ["-temporal_reads", "4"] if memory == "sdnc" else []
    return ["-memory_type", memory, "-mem_slot", str(cells), "-sparse_reads", "4", *extra]


def run(task: str, memory: str, args: argparse.Namespace) -> dict:
    import torch

    from memfn.tasks.train import parse_args, train

    options = parse_args(task, COMMANDS[task].split())
    lengths = [options.sequence_max_length * m for m in EVAL[task]] if task in EVAL else list(GRAPH_EVAL)
    argv = [*COMMANDS[task].split(), *memory_options(memory, args.sparse_cells), "--threads", str(args.threads),
            "--seed", str(args.seed), "--quiet", "--plot-dir", "", "-iterations", str(args.iterations),
            "--max-seconds", str(args.seconds), "--eval-lengths", *map(str, dict.fromkeys(lengths))]  # fmt: skip
    if args.checkpoint_root:  # keep each model (e.g. for --evaluate with more cells)
        argv += ["--checkpoint-dir", str(Path(args.checkpoint_root) / f"{task}_{memory}"), "--overwrite"]
    torch.manual_seed(args.seed)
    results = train(parse_args(task, argv))
    results.update(task=task, memory=memory)
    return results


def evaluate_checkpoint(args: argparse.Namespace) -> None:
    import torch

    from memfn.tasks.infer import load
    from memfn.tasks.train import build_model, evaluate

    torch.set_num_threads(args.threads)
    loaded = load(args.evaluate)
    options = loaded.args
    if args.mem_slot:
        options.mem_slot = args.mem_slot
    model = build_model(options)
    model.load_state_dict(loaded.model.state_dict())
    generator = torch.Generator().manual_seed(10**6 + args.seed)
    print(f"{options.task}, {options.memory_type} with {options.mem_slot} cells, iteration {loaded.iteration}")
    for length in args.lengths or [loaded.max_length]:
        start = time.perf_counter()
        loss, metric, _ = evaluate(model, loaded.task, length, args.sequences, generator)
        seconds = time.perf_counter() - start
        print(f"length {length}: {loaded.task.metric_name} {metric:.4f} (loss {loss:.4g}; {args.sequences} sequences, "
              f"{seconds:.1f} s)", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    p.add_argument("--memories", nargs="+", default=["dnc", "sam", "sdnc"], choices=["dnc", "sam", "sdnc"])
    p.add_argument("--seconds", type=float, default=180.0, help="training time budget per run")
    p.add_argument("--iterations", type=int, default=100_000, help="iteration cap per run")
    p.add_argument("--sparse-cells", type=int, default=64, help="cells of the SAM and SDNC memories")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--checkpoint-root", help="save each run's final model under this folder (<task>_<memory>)")
    p.add_argument("--evaluate", metavar="CHECKPOINT", help="score this checkpoint instead of training")
    p.add_argument("--mem-slot", type=int, help="with --evaluate: run the trained weights with this many cells")
    p.add_argument("--lengths", type=int, nargs="+", help="with --evaluate: lengths (default: the trained one)")
    p.add_argument("--sequences", type=int, default=100, help="with --evaluate: sequences per length")
    args = p.parse_args()
    if args.evaluate:
        return evaluate_checkpoint(args)
    rows = []
    for task in args.tasks:
        for memory in args.memories:
            start = time.perf_counter()
            row = run(task, memory, args)
            row["wall"] = time.perf_counter() - start
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{args.seconds:g} s of training per run, {args.threads} thread(s), seed {args.seed}")
    print("| task | memory | iterations | metric | held-out lengths: metric |")
    print("|---|---|---|---|---|")
    for row in rows:
        name = next(k for k in row if k in ("bit_error_rate", "edge_accuracy"))
        held = ", ".join(f"{k.split('@')[1]}: {v:.4f}" for k, v in row.items() if k.startswith(name + "@"))
        print(f"| {row['task']} | {row['memory']} | {row['iterations']} | {name} | {held} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
