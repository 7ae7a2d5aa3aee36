"""Compiled inference from a task checkpoint, and the single step exported with ``torch.export``.

``python tasks/infer.py CHECKPOINT`` (or ``python -m memfn.tasks.infer CHECKPOINT``) rebuilds the
model from the options a task script stored in its checkpoint, runs it (compiled unless
``--no-compile``) on freshly generated task data or on a tensor file (``--inputs``), and prints the
task metric and the throughput in sequences per second. ``--export PATH`` writes the batched single
step as a ``torch.export`` program that loads and runs with plain torch (:func:`load_step`).

Mistakes (a missing or foreign checkpoint, inputs of the wrong shape) are one ``error:`` line on
stderr and exit status 2, as in the task scripts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import optree
import torch
import torch._inductor
from torch import Tensor, nn

from memfn._resources import batched
from memfn.addressing import aten_decompositions
from memfn.cell import batched_step
from memfn.nn import MemoryNetwork
from memfn.tasks.definitions import TASKS, Batch, Task
from memfn.tasks.train import (
    UserError,
    _one_line,
    _Parser,
    build_model,
    check_args,
    read_checkpoint,
    run_command,
    weights_mismatch,
)
from memfn.tasks.train import build_parser as build_train_parser

PROG = "infer.py"
#: Name of the JSON record (sizes, state layout, training options) stored beside an exported step.
EXPORT_META = "memfn.json"


# -- the checkpoint ------------------------------------------------------------------------------


class Loaded(NamedTuple):
    """A model rebuilt from a checkpoint, in eval mode, with the task it was trained on."""

    model: MemoryNetwork
    task: Task
    args: argparse.Namespace  # the training options stored in the checkpoint
    path: Path
    iteration: int | None
    max_length: int  # the longest training sequence reached (curriculum included)


def load(spec: str | Path, cuda: int = -1) -> Loaded:
    """Rebuild the model a task script saved (a checkpoint file or its directory) and load its weights.

    ``cuda`` is the GPU id, ``-1`` for CPU. Raises :class:`~memfn.tasks.train.UserError` with a
    one-line message when the file is missing, unreadable or does not describe its own weights.
    """
    path, ckpt = read_checkpoint(spec, "checkpoint")
    config = ckpt["config"]
    task_name = config.get("task")
    if task_name not in TASKS:
        raise UserError(f"checkpoint: {path} names no known task (task={task_name!r}; known: {', '.join(TASKS)})")
    args = build_train_parser(task_name).parse_args([])  # defaults for options older checkpoints lack
    vars(args).update(config)
    args.task, args.output_size = task_name, config.get("output_size")
    args.compile, args.cuda = False, cuda
    try:
        check_args(args)
        model = build_model(args)
    except (UserError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint: {path} has unusable options ({_one_line(exc)})") from None
    mismatch = weights_mismatch(ckpt["model"], model.state_dict())
    if mismatch:
        raise UserError(f"checkpoint: {path} holds weights that do not fit the model its options describe ({mismatch})")
    model.load_state_dict(ckpt["model"])
    max_length = ckpt.get("max_length", args.sequence_max_length)
    return Loaded(
        cast(MemoryNetwork, model.eval()),
        TASKS[task_name](args.input_size),
        args,
        path,
        ckpt.get("iteration"),
        max_length,
    )


def describe(loaded: Loaded) -> str:
    a = loaded.args
    trained = "" if loaded.iteration is None else f", trained {loaded.iteration} iterations"
    sparse = "" if a.memory_type == "dnc" else f" ({a.sparse_reads} sparse reads)"
    return (
        f"{a.task} task, {a.memory_type} memory of {a.mem_slot} cells x {a.mem_size}, {a.read_heads} read heads"
        f"{sparse}, {a.rnn_type} controller {a.nhid} x {a.nhlayer}{trained} (up to length {loaded.max_length})"
    )


# -- the data ------------------------------------------------------------------------------------


def generated_batches(task: Task, batches: int, batch_size: int, length: int, seed: int = 0) -> list[Batch]:
    """``batches`` fresh batches of the task at ``length``, drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [task.sample(batch_size, length, generator) for _ in range(batches)]


def file_batches(task: Task, path: str | Path, batch_size: int) -> list[Batch]:
    """The tensor saved at ``path`` (``torch.save``; shape ``(batch, time, input_size)``) split into
    batches, with the targets the task derives from its inputs."""
    expected = f"a tensor of shape (batch, time, input_size={task.input_size})"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--inputs: no file at {path}") from None
    except Exception as exc:
        raise UserError(f"--inputs: {path} is not a readable tensor file ({type(exc).__name__})") from None
    if not isinstance(data, Tensor):
        raise UserError(f"--inputs: {path} holds a {type(data).__name__}, expected {expected}")
    if data.ndim != 3 or data.shape[-1] != task.input_size or data.shape[0] == 0 or data.shape[1] == 0:
        raise UserError(f"--inputs: {path} holds a tensor of shape {tuple(data.shape)}, expected {expected}")
    if data.is_complex():
        raise UserError(f"--inputs: {path} holds a complex tensor, expected real values")
    try:
        return [task.batch_from_inputs(chunk) for chunk in data.float().split(batch_size)]  # type: ignore[no-untyped-call]  # torch
    except ValueError as exc:
        raise UserError(f"--inputs: {path} does not hold {task.name} task inputs: {exc}") from None


def check_lengths(task: Task, model: MemoryNetwork, batches: list[Batch]) -> None:
    """Argmax scores positions with the output features: sequences may not be longer than them."""
    longest = max(b.length for b in batches)
    if task.name == "argmax" and longest > model.output_size:
        raise UserError(
            f"argmax: this model scores at most {model.output_size} positions (its output size), "
            f"got sequences of {longest} numbers"
        )


# -- inference -----------------------------------------------------------------------------------


class Inference(NamedTuple):
    outputs: list[Tensor]  # one (B, T, output_size) tensor per batch, on the CPU
    metric: float  # the task metric, averaged over every sequence
    sequences: int
    seconds: float  # the timed pass over all batches (after the warm-up)
    warmup_seconds: float  # the untimed first batch: includes the compile when compiled

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / max(self.seconds, 1e-9)


def run_inference(model: MemoryNetwork, task: Task, batches: list[Batch], compile: bool = True) -> Inference:
    """Run ``model`` over every batch without gradients, compiled (the one-step function) or eager.

    The first batch runs once untimed (the compile happens there), then all batches are timed. A
    shorter last batch is padded to the first batch's size, so a compiled step never sees a second
    batch size (which would cost another compile).
    """
    model.eval()
    model.use_compile = bool(compile)
    device = next(model.parameters()).device
    return run_inference_with(lambda x: model(x.to(device), None, reset_experience=True)[0], task, batches)


def run_inference_with(run: Callable[[Tensor], Tensor], task: Task, batches: list[Batch]) -> Inference:
    """Time ``run`` (inputs ``(B, T, I)`` -> outputs ``(B, T, O)``) over the batches as
    :func:`run_inference` does: the first batch untimed, a short last batch padded."""
    size = batches[0].inputs.shape[0]

    def forward(inputs: Tensor) -> Tensor:
        n = inputs.shape[0]
        if n < size:
            inputs = torch.cat([inputs, inputs.new_zeros(size - n, *inputs.shape[1:])])
        return run(inputs)[:n].cpu()

    with torch.no_grad():
        start = time.perf_counter()
        forward(batches[0].inputs)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        outputs = [forward(b.inputs) for b in batches]
        seconds = time.perf_counter() - start
    count = sum(b.inputs.shape[0] for b in batches)
    metric = sum(task.metric(o, b) * b.inputs.shape[0] for o, b in zip(outputs, batches)) / count
    return Inference(outputs, metric, count, seconds, warmup)


# -- the exported step ---------------------------------------------------------------------------


def _leaf_names(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of a state pytree's tensors, in ``optree.tree_leaves`` order."""
    if isinstance(tree, Tensor):
        return [prefix]
    items = zip(tree._fields, tree) if hasattr(tree, "_fields") else ((str(i), v) for i, v in enumerate(tree))
    return [name for key, value in items for name in _leaf_names(value, f"{prefix}.{key}" if prefix else key)]


class StepModule(nn.Module):
    """One batched time step of a shell as a module, for ``torch.export``.

    ``forward(x [B, input_size], state) -> (y [B, output_size], new_state)``, where ``state`` is a
    flat tuple of tensors named :attr:`state_names` (the leaves of the shell's
    :class:`~memfn.cell.CellState`, each with a leading batch axis). It runs the broadcasting step
    (``use_vmap=False``, the same numbers as ``vmap``): exporting the vmapped step pins the batch
    size, this one keeps it dynamic. The parameters are the shell's own (``net.*``).
    """

    def __init__(self, net: MemoryNetwork) -> None:
        super().__init__()
        self.net = net
        self._step = batched_step(net.cell, use_vmap=False)
        p = next(net.parameters())
        example = net.cell.init_state(p.dtype, p.device)
        leaves: list[Tensor]
        leaves, self._spec = optree.tree_flatten(cast("optree.PyTree[Tensor]", example))
        self.state_names = tuple(_leaf_names(example))
        #: One example's initial state, flat (not all zeros: SAM's read slots start on cells 0..K-1).
        self.initial_leaves = tuple(leaves)

    def initial_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return _batched(self.initial_leaves, batch_size)

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        y, new = self._step(self.net.step_params(), optree.tree_unflatten(self._spec, list(state)), x)
        return y, tuple(optree.tree_leaves(new))


def export_step(net: MemoryNetwork, example_batch: int = 2) -> torch.export.ExportedProgram:
    """``torch.export`` the batched single step of ``net`` (batch axis dynamic), as plain aten ops.

    memfn's custom operators are decomposed into aten code, so the program loads and runs with
    ``torch.export.load`` alone, without importing memfn.
    """
    module = StepModule(net).eval()
    p = next(net.parameters())
    x = torch.zeros(example_batch, net.input_size, dtype=p.dtype, device=p.device)
    state = module.initial_state(example_batch)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.export.export(module, (x, state), dynamic_shapes=({0: batch}, tuple({0: batch} for _ in state)))
    table = torch.export.default_decompositions()
    table.update(aten_decompositions())  # type: ignore[no-untyped-call]  # torch
    with _quiet_treespec_deprecation():
        return cast(torch.export.ExportedProgram, program.run_decompositions(table))


@contextlib.contextmanager
def _quiet_treespec_deprecation() -> Iterator[None]:
    """torch 2.13 deep-copies exported programs' tree specs (in run_decompositions, and in
    AOTInductor's compile) through its own deprecated ``isinstance`` check: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        yield


def _batched(leaves: tuple[Tensor, ...], batch_size: int) -> tuple[Tensor, ...]:
    return tuple(batched(t, batch_size) for t in leaves)


class ExportedStep(NamedTuple):
    """A step read back by :func:`load_step` (``torch.export``) or :func:`load_aot` (AOTInductor):
    ``step(x, state) -> (y, state)`` and how to feed it."""

    step: Callable[..., tuple[Tensor, tuple[Tensor, ...]]]
    input_size: int
    output_size: int
    state_names: tuple[str, ...]
    initial_leaves: tuple[Tensor, ...]  # one example's initial state, in ``state_names`` order
    config: dict[str, Any]  # the training options of the checkpoint it came from (may be empty)
    program: torch.export.ExportedProgram | None = None  # the torch.export program (not for AOT packages)

    def initial_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return _batched(self.initial_leaves, batch_size)

    def run(self, inputs: Tensor) -> Tensor:
        """Outputs ``(B, T, output_size)`` of the exported step over ``inputs`` ``(B, T, input_size)``."""
        step = self.step
        state = self.initial_state(inputs.shape[0])
        outputs = []
        with torch.no_grad():
            for t in range(inputs.shape[1]):
                # Contiguous: an AOTInductor runner assumes the strides it was compiled for.
                y, state = step(inputs[:, t].contiguous(), state)
                outputs.append(y)
        return torch.stack(outputs, dim=1)


def _step_record(net: MemoryNetwork, config: dict[str, Any] | None) -> str:
    """The JSON stored beside an exported or AOT-compiled step: sizes, state layout, initial state."""
    module = StepModule(net)
    initial = io.BytesIO()
    torch.save([t.cpu() for t in module.initial_leaves], initial)
    meta = {
        "input_size": net.input_size,
        "output_size": net.output_size,
        "state_names": module.state_names,
        "state_shapes": [list(t.shape) for t in module.initial_leaves],
        "config": config or {},
        # zlib: the initial memory is mostly zeros.
        "initial_state": base64.b64encode(zlib.compress(initial.getvalue())).decode("ascii"),
    }
    return json.dumps(meta, default=str)


def _step_from_record(step: Callable[..., Any], record: str, program: Any = None) -> ExportedStep:
    meta = json.loads(record)
    initial = zlib.decompress(base64.b64decode(meta["initial_state"]))
    leaves = tuple(torch.load(io.BytesIO(initial), weights_only=True))
    return ExportedStep(step, meta["input_size"], meta["output_size"], tuple(meta["state_names"]), leaves,
                        meta["config"], program)  # fmt: skip


def save_step(net: MemoryNetwork, path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Export ``net``'s step (:func:`export_step`) to ``path`` with its sizes and state layout."""
    path = Path(path)
    program = export_step(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={EXPORT_META: _step_record(net, config)})
    return path


def load_step(path: str | Path) -> ExportedStep:
    """Read a step written by :func:`save_step` (or ``infer.py --export``)."""
    extra = {EXPORT_META: ""}
    program = torch.export.load(path, extra_files=extra)
    return _step_from_record(program.module(), extra[EXPORT_META], program)


def save_aot(net: MemoryNetwork, path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Compile ``net``'s exported step ahead of time with AOTInductor into the package ``path`` (``.pt2``).

    The package holds native code for this machine's CPU (or GPU) and memfn's record (sizes, state
    layout, training options) as an extra file; :func:`load_aot` runs it with no compile at start-up.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise UserError(f"--aot: an AOTInductor package is a .pt2 file, got {path}")
    program = export_step(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        built = Path(folder) / path.name
        with _quiet_treespec_deprecation():
            torch._inductor.aoti_compile_and_package(program, package_path=str(built))
        _with_extra_file(built, path, EXPORT_META, _step_record(net, config))
    return path


def _with_extra_file(source: Path, target: Path, name: str, text: str) -> None:
    """Copy the package ``source`` to ``target`` with ``text`` added as the extra file ``name``
    (``<archive>/extra/<name>``, where torch's own packages keep extra files)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        names = src.namelist()
        for item in names:
            out.writestr(src.getinfo(item), src.read(item))
        out.writestr(f"{names[0].split('/', 1)[0]}/extra/{name}", text)


def load_aot(path: str | Path) -> ExportedStep:
    """Read a package written by :func:`save_aot` (or ``infer.py --aot``); its step runs compiled code.

    The package's native code is run as it is: load only packages you built (as for any ``.so``).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = [n for n in archive.namelist() if n.endswith(f"/extra/{EXPORT_META}")]
            if not records:
                raise UserError(f"--load: {path} is not a memfn AOT package (no {EXPORT_META}; write one with --aot)")
            record = archive.read(records[0]).decode()
    except FileNotFoundError:
        raise UserError(f"--load: no file at {path}") from None
    except zipfile.BadZipFile:
        raise UserError(f"--load: {path} is not an AOTInductor package (.pt2 written by --aot)") from None
    return _step_from_record(torch._inductor.aoti_load_package(str(path)), record)


# -- the command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Run a model trained by tasks/*_task.py on task data (compiled) and report its metric and "
        "throughput; optionally export its single step with torch.export.",
    )
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by a task script (--checkpoint-dir), or its "
                   "directory (not with --load)")  # fmt: skip
    p.add_argument("--inputs", metavar="FILE.pt", help="a tensor (batch, time, input_size) saved with torch.save, "
                   "instead of generated data (the task's targets follow from its inputs)")  # fmt: skip
    p.add_argument("--batches", type=int, default=10, help="generated batches (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (default 32)")
    p.add_argument("--length", type=int, default=None, help="generated sequence length (default: the checkpoint's)")
    p.add_argument("--no-compile", action="store_true", help="run the eager step instead of the compiled one")
    p.add_argument("--export", metavar="PATH", help="write the single step here (torch.export, .pt2)")
    p.add_argument("--aot", metavar="PATH.pt2", help="compile the single step ahead of time (AOTInductor) into "
                   "this package, for --load")  # fmt: skip
    p.add_argument("--load", metavar="PATH.pt2", help="run a package written by --aot instead of a checkpoint: "
                   "no compile at start-up")  # fmt: skip
    p.add_argument("--save-outputs", metavar="FILE.pt", help="save the outputs (batch, time, output_size) here")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    p.add_argument("--cuda", type=int, default=-1, help="GPU id, -1 for CPU (default)")
    p.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (default 1: see the README)")
    return p


def infer(args: argparse.Namespace) -> Inference:
    """What ``main`` does once the options are parsed: load, run, report, save, export."""
    for name in ("batches", "batch_size", "length", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if (args.checkpoint is None) == (args.load is None):
        raise UserError("the following arguments are required: checkpoint (or --load PACKAGE.pt2, not both)")
    if args.load and (args.export or args.aot or args.no_compile or args.cuda >= 0):
        raise UserError(
            "--load runs a compiled package as it is: --export, --aot, --no-compile and --cuda need a checkpoint"
        )
    for option in ("save_outputs", "export", "aot"):  # fail before the run, not after it
        if getattr(args, option):
            _write(f"--{option.replace('_', '-')}", getattr(args, option), lambda p: None)
    if args.load:
        return infer_packaged(args)
    torch.set_num_threads(args.threads)
    loaded = load(args.checkpoint, args.cuda)
    model, task = loaded.model, loaded.task
    if args.inputs:
        batches = file_batches(task, args.inputs, args.batch_size)
    else:
        batches = generated_batches(task, args.batches, args.batch_size, args.length or loaded.max_length, args.seed)
    check_lengths(task, model, batches)
    print(f"model: {describe(loaded)}", flush=True)
    mode = "eager" if args.no_compile else "compiled"
    result = run_inference(model, task, batches, compile=not args.no_compile)
    steps = batches[0].inputs.shape[1]
    print(f"warm-up: first batch in {result.warmup_seconds:.2f} s ({mode}; not timed)")
    print(f"{task.metric_name} {result.metric:.6g}")
    print(
        f"sequences/s {result.sequences_per_second:.1f} ({mode}; {result.sequences} sequences of {steps} steps "
        f"in {result.seconds:.3f} s)"
    )
    if args.save_outputs:
        _write("--save-outputs", args.save_outputs, lambda p: torch.save(torch.cat(result.outputs), p))
        print(f"outputs saved to {args.save_outputs}")
    config = {**vars(loaded.args), "max_length": loaded.max_length}
    if args.export:
        _write("--export", args.export, lambda p: save_step(model, p, config))
        print(f"exported the single step to {args.export} (load it with memfn.tasks.infer.load_step)")
    if args.aot:
        start = time.perf_counter()
        _write("--aot", args.aot, lambda p: save_aot(model, p, config))
        print(f"compiled the single step ahead of time into {args.aot} in {time.perf_counter() - start:.1f} s "
              f"(run it with: infer.py --load {args.aot})")  # fmt: skip
    return result


def infer_packaged(args: argparse.Namespace) -> Inference:
    """``--load``: the task and sizes from the package's record, then the same run and report."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    step = load_aot(args.load)
    loaded_in = time.perf_counter() - start
    config = step.config
    if config.get("task") not in TASKS:
        raise UserError(f"--load: {args.load} names no known task (task={config.get('task')!r})")
    task = TASKS[config["task"]](step.input_size)
    if args.inputs:
        batches = file_batches(task, args.inputs, args.batch_size)
    else:
        length: Any = args.length or config.get("max_length") or config.get("sequence_max_length")
        batches = generated_batches(task, args.batches, args.batch_size, int(length), args.seed)
    if task.name == "argmax" and max(b.length for b in batches) > step.output_size:
        raise UserError(f"argmax: this model scores at most {step.output_size} positions, got longer sequences")
    print(f"package: {args.load} ({config.get('task')} task, {config.get('memory_type')} memory), loaded in "
          f"{loaded_in:.2f} s")  # fmt: skip
    result = run_inference_with(step.run, task, batches)
    steps = batches[0].inputs.shape[1]
    print(f"start-up: {loaded_in + result.warmup_seconds:.2f} s to the first batch's outputs (AOT; no compile)")
    print(f"{task.metric_name} {result.metric:.6g}")
    print(f"sequences/s {result.sequences_per_second:.1f} (AOT; {result.sequences} sequences of {steps} steps "
          f"in {result.seconds:.3f} s)")  # fmt: skip
    if args.save_outputs:
        _write("--save-outputs", args.save_outputs, lambda p: torch.save(torch.cat(result.outputs), p))
        print(f"outputs saved to {args.save_outputs}")
    return result


def _write(option: str, path: str, write: Callable[[str], object]) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise UserError(f"{option}: cannot write {path} ({exc.strerror or type(exc).__name__})") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_command(PROG, lambda: infer(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
