"""The training loop behind ``tasks/*_task.py``: pytorch-dnc's command lines, and what it lacked.

Options accept both ``-name`` (pytorch-dnc's README) and ``--name``. Ours on top: ``--seed``,
``--compile``, ``--checkpoint-dir``, ``--resume``, ``--plot-dir``, ``--tensorboard``, ``--quiet``,
``--stop-at``, ``--max-seconds``, ``--curriculum-max``, ``--eval-lengths``, ``--controller-init``,
``--knn``, ``--index``. Under ``torchrun``
the model is wrapped in DDP (gloo on CPU, nccl on GPU): gradients are averaged and rank 0 alone
logs, plots and checkpoints.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from memfn.controllers import INITS
from memfn.nn import DNC, SAM, SDNC
from memfn.tasks.definitions import TASKS, Task

#: Options that decide the model's shape: a checkpoint is only compatible if they match.
#: Defaults of model options that older checkpoints do not record.
OPTION_DEFAULTS = {
    "knn": "exact", "index": "ivf", "masking": False, "deallocation": False, "sharpness": False, "write_heads": 1,
}  # fmt: skip
MODEL_OPTIONS = (
    "task", "input_size", "rnn_type", "nhid", "memory_type", "nlayer", "nhlayer", "mem_size", "mem_slot",
    "read_heads", "sparse_reads", "temporal_reads", "output_size", "knn", "index", "masking", "deallocation",
    "sharpness", "write_heads",
)  # fmt: skip
CHECKPOINT_NAME = "checkpoint.pt"
#: Sequences each summary evaluates, at least.
SUMMARY_SEQUENCES = 32


class UserError(Exception):
    """A mistake in the command line or files: reported as one line, exit status 2."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: the run stops (exit status 1) and keeps its last checkpoint."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UserError(message)


def build_parser(task: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{task}_task.py", description=f"Train a memory network on the {task} task.")

    def opt(name: str, **kw: Any) -> None:
        flags = {f"-{name}", f"--{name}", f"-{name.replace('-', '_')}", f"--{name.replace('-', '_')}"}
        p.add_argument(*sorted(flags, key=len), dest=name.replace("-", "_"), **kw)

    # pytorch-dnc's options and defaults (its copy task).
    default_input = TASKS[task].default_input_size if task in TASKS else 6
    opt("input_size", type=int, default=default_input, help=f"input width (default {default_input}; copy: bits + 1 "
        "delimiter channel; the other tasks' docstrings in memfn.tasks say how they use it)")  # fmt: skip
    opt("rnn_type", default="lstm", choices=["lstm", "gru", "rnn"], help="controller type")
    opt("nhid", type=int, default=64, help="controller hidden units")
    opt("dropout", type=float, default=0.0, help="controller dropout between layers")
    opt("memory_type", default="dnc", choices=["dnc", "sdnc", "sam"], help="memory type")
    opt("nlayer", type=int, default=1, help="memory layers (DNC num_layers)")
    opt("nhlayer", type=int, default=2, help="controller layers per memory layer")
    opt("lr", type=float, default=1e-4, help="learning rate")
    opt("optim", default="adam", choices=["adam", "adamax", "rmsprop", "sgd", "adagrad"], help="optimiser")
    opt("clip", type=float, default=50.0, help="gradient norm clipping")
    opt("batch_size", type=int, default=100, help="batch size")
    opt("mem_size", type=int, default=20, help="memory cell width (cell_size)")
    opt("mem_slot", type=int, default=16, help="memory cells (nr_cells)")
    opt("read_heads", type=int, default=4, help="read heads")
    opt("sparse_reads", type=int, default=10, help="sparse reads per head (sam, sdnc)")
    opt("temporal_reads", type=int, default=2, help="temporal reads (sdnc)")
    opt("sequence_max_length", type=int, default=4, help="longest training sequence (graph tasks: largest graph)")
    opt("curriculum_increment", type=int, default=0, help="grow sequence_max_length by this much ...")
    opt("curriculum_freq", type=int, default=1000, help="... every this many iterations")
    opt("curriculum-max", type=int, default=None, help="... up to this length (graph tasks: nodes); default no limit")
    opt("cuda", type=int, default=-1, help="GPU id, -1 for CPU (falls back to CPU with a warning)")
    opt("iterations", type=int, default=100000, help="training iterations")
    opt("summarize_freq", type=int, default=100, help="log, plot and evaluate every this many iterations")
    opt("check_freq", type=int, default=100, help="checkpoint every this many iterations (and at the end)")
    opt("visdom", action="store_true", help="send plots to a visdom server (localhost:8097)")
    # Ours.
    opt("seed", type=int, default=0, help="random seed (data, initialisation, dropout)")
    opt("compile", action="store_true", help="run the compiled step (torch.compile)")
    opt("controller-init", choices=list(INITS), help="default: memoryless for dnc, torch for sam and sdnc")
    opt(
        "knn",
        default="exact",
        choices=["exact", "faiss", "auto"],
        help="nearest cells for sam/sdnc (see memfn.sparse.knn)",
    )
    opt("index", default="ivf", choices=["flat", "ivf", "hnsw"], help="faiss index (with --knn faiss)")
    opt("checkpoint-dir", default=None, help="write checkpoints here (atomically)")
    opt(
        "resume",
        default=None,
        nargs="?",
        const="",
        help="resume from a checkpoint file or directory (bare: from --checkpoint-dir)",
    )
    opt("overwrite", action="store_true", help="start afresh over the checkpoint in --checkpoint-dir")
    opt("plot-dir", default="plots", help="save PNG plots under this folder, one subfolder per run ('' to disable)")
    opt("plot-keep", type=int, default=20, help="memory heatmaps a run keeps (older ones thinned out)")
    opt(
        "threads",
        type=int,
        default=1,
        help="intra-op CPU threads (1: fastest at these sizes, and no collapse when another process holds a core)",
    )
    opt("tensorboard", default=None, nargs="?", const="runs", help="log scalars to TensorBoard (log dir)")
    opt("quiet", action="store_true", help="no progress bar; one plain line per summary")
    opt("stop-at", type=float, default=None, help="stop once the summarised metric reaches this value")
    opt("max-seconds", type=float, default=None, help="stop once training has run this long (a time budget)")
    # Csordas & Schmidhuber 2019 and deepmind/dnc; SAM and SDNC take the ones that apply (build_model).
    opt("masking", action="store_true", help="dnc, sam, sdnc: masked content addressing (a learned mask per head)")
    opt("deallocation", action="store_true", help="dnc: free gates also erase the freed cells' content")
    opt("sharpness", action="store_true", help="dnc, sdnc: learned sharpness of the forward/backward link weightings")
    opt("write_heads", type=int, default=1, help="dnc: write heads")
    opt("eval-lengths", type=int, nargs="+", metavar="L", help="lengths evaluated at the end (copy: 1x 2x 4x)")
    return p


def _finite(name: str, value: float, low: float, low_ok: bool = False) -> None:
    """``UserError`` unless ``value`` is finite and above ``low`` (or equal to it when ``low_ok``)."""
    if not math.isfinite(value) or value < low or (value == low and not low_ok):
        bound = f">= {low:g}" if low_ok else f"> {low:g}"
        raise UserError(f"-{name} must be a finite number {bound}, got {value}")


def check_args(args: argparse.Namespace) -> None:
    for name in ("input_size", "nhid", "nlayer", "nhlayer", "batch_size", "mem_size", "mem_slot", "read_heads",
                 "sparse_reads", "temporal_reads", "sequence_max_length", "curriculum_freq", "summarize_freq",
                 "check_freq", "plot_keep", "threads", "write_heads"):  # fmt: skip
        if getattr(args, name) < 1:
            raise UserError(f"-{name} must be >= 1, got {getattr(args, name)}")
    if args.curriculum_max is not None and args.curriculum_max < args.sequence_max_length:
        raise UserError(f"--curriculum-max must be >= -sequence_max_length ({args.sequence_max_length}), "
                        f"got {args.curriculum_max}")  # fmt: skip
    if args.eval_lengths is not None and min(args.eval_lengths) < 1:
        raise UserError(f"--eval-lengths must all be >= 1, got {' '.join(map(str, args.eval_lengths))}")
    if args.task == "argmax" and args.eval_lengths and max(args.eval_lengths) > args.output_size:
        limit = args.output_size
        raise UserError(f"--eval-lengths must be <= {limit} for argmax: the model scores that many positions")
    if args.iterations < 0 or args.curriculum_increment < 0:
        raise UserError("-iterations and -curriculum_increment must be >= 0")
    if not 0 <= args.dropout < 1:  # also false for NaN
        raise UserError(f"-dropout must be in [0, 1), got {args.dropout}")
    _finite("lr", args.lr, 0.0)
    # clip_grad_norm_ with a norm <= 0 flips or zeroes every gradient.
    _finite("clip", args.clip, 0.0)
    if args.max_seconds is not None:
        _finite("max-seconds", args.max_seconds, 0.0)
    if args.stop_at is not None and not math.isfinite(args.stop_at):
        raise UserError(f"--stop-at must be a finite number, got {args.stop_at}")
    if args.input_size < 2 and args.task in ("copy", "adding", "argmax"):  # no bits to copy; no numbers
        what = {"copy": "bits + delimiter"}.get(args.task, "numbers + terminator")
        raise UserError(f"-input_size must be >= 2 for the {args.task} task ({what}), got {args.input_size}")
    task = make_task(args)
    lengths = {"-sequence_max_length": [args.sequence_max_length], "--eval-lengths": args.eval_lengths or []}
    for option, values in lengths.items():
        low, high = task.min_length, task.max_length
        bad = [v for v in values if v < low or (high is not None and v > high)]
        if bad:
            within = f"{low} to {high}" if high is not None else f">= {low}"
            raise UserError(f"{option} must be {within} for the {args.task} task (-input_size {args.input_size}), "
                            f"got {bad[0]}")  # fmt: skip
    if args.memory_type in ("sam", "sdnc"):
        for name in ("sparse_reads",) + (("temporal_reads",) if args.memory_type == "sdnc" else ()):
            if getattr(args, name) > args.mem_slot:
                raise UserError(f"-{name} must be <= -mem_slot ({args.mem_slot}), got {getattr(args, name)}")


def make_task(args: argparse.Namespace) -> Task:
    """The task of ``args.task`` sized by ``-input_size``; ``UserError`` if that size cannot encode it."""
    try:
        return TASKS[args.task](args.input_size)
    except ValueError as exc:
        raise UserError(f"-input_size: {exc}") from None


def check_paths(args: argparse.Namespace) -> None:
    """Refuse output folders that are files (or cannot be made), and a checkpoint that would be
    overwritten without ``--resume`` or ``--overwrite``; a bare ``--resume`` names ``--checkpoint-dir``."""
    if args.resume == "":
        if not args.checkpoint_dir:
            raise UserError("--resume without a path resumes from --checkpoint-dir, which was not given")
        args.resume = args.checkpoint_dir
    for option, folder in (("--checkpoint-dir", args.checkpoint_dir), ("--plot-dir", args.plot_dir)):
        if not folder:
            continue
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UserError(f"{option}: {folder} is a file, not a folder")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{option}: cannot create {folder} ({exc.strerror or type(exc).__name__})") from None
    if args.checkpoint_dir:
        remove_stale_temporaries(Path(args.checkpoint_dir))
        existing = Path(args.checkpoint_dir) / CHECKPOINT_NAME
        if existing.exists() and not args.resume and not args.overwrite:
            raise UserError(
                f"--checkpoint-dir: {existing} exists; pass --resume to continue it or --overwrite to start over"
            )


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete ``checkpoint.pt.tmp<pid>`` files left by a save that was killed (their process is gone)."""
    removed = []
    for tmp in folder.glob(CHECKPOINT_NAME + ".tmp*"):
        pid = tmp.name[len(CHECKPOINT_NAME) + 4 :]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another run is saving right now
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_model(args: argparse.Namespace) -> nn.Module:
    common = dict(
        input_size=args.input_size, hidden_size=args.nhid, rnn_type=args.rnn_type, num_layers=args.nlayer,
        num_hidden_layers=args.nhlayer, dropout=args.dropout, nr_cells=args.mem_slot, cell_size=args.mem_size,
        read_heads=args.read_heads, gpu_id=args.cuda, batch_first=True, output_size=args.output_size,
        compile=args.compile,
    )  # fmt: skip
    if getattr(args, "controller_init", None):  # else the shell's default
        common["controller_init"] = args.controller_init
    # getattr: checkpoints written before these options existed rebuild with the defaults.
    knn = getattr(args, "knn", "exact")
    search = {"knn": "faiss", "index": args.index} if knn == "faiss" else {"knn": knn}
    masking, deallocation = bool(getattr(args, "masking", False)), bool(getattr(args, "deallocation", False))
    sharpness, write_heads = bool(getattr(args, "sharpness", False)), int(getattr(args, "write_heads", 1))
    improvements = {
        "masking": masking,
        "deallocation": deallocation,
        "sharpness": sharpness,
        "write_heads": write_heads,
    }
    given = [flag for flag, value in improvements.items() if value != _PLAIN_DNC[flag]]
    unusable = [flag for flag in given if args.memory_type not in _MEMORIES_TAKING[flag]]
    if unusable:
        raise UserError("; ".join(f"-{flag} applies to -memory_type {' and '.join(_MEMORIES_TAKING[flag])} only"
                                  for flag in unusable) + f", not {args.memory_type}")  # fmt: skip
    if args.memory_type == "sam":
        return SAM(**common, sparse_reads=args.sparse_reads, **search, masking=masking)
    if args.memory_type == "sdnc":
        return SDNC(**common, sparse_reads=args.sparse_reads, temporal_reads=args.temporal_reads, **search,
                    masking=masking, link_sharpness=sharpness)  # fmt: skip
    return DNC(**common, masking=masking, deallocation=deallocation, link_sharpness=sharpness, write_heads=write_heads)


_PLAIN_DNC = {"masking": False, "deallocation": False, "sharpness": False, "write_heads": 1}
#: Which -memory_type takes each option (SAM/SDNC have no free gates and write once per step).
_MEMORIES_TAKING = {
    "masking": ("dnc", "sam", "sdnc"),
    "deallocation": ("dnc",),
    "sharpness": ("dnc", "sdnc"),
    "write_heads": ("dnc",),
}


def build_optimizer(args: argparse.Namespace, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    # pytorch-dnc's optimiser settings.
    if args.optim == "adam":
        return torch.optim.Adam(params, lr=args.lr, eps=1e-9, betas=(0.9, 0.98))
    if args.optim == "adamax":
        return torch.optim.Adamax(params, lr=args.lr, eps=1e-9, betas=(0.9, 0.98))
    if args.optim == "rmsprop":
        return torch.optim.RMSprop(params, lr=args.lr, momentum=0.9, eps=1e-10)
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.lr)
    return torch.optim.Adagrad(params, lr=args.lr)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind, and a failed
    write (a full disk) removes its temporary file and is one ``UserError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a short write as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc, 120)
        raise UserError(f"--checkpoint-dir: cannot write {path} ({reason}); the previous checkpoint is kept") from None


def plain_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options as plain data (what ``torch.load(weights_only=True)`` reads back): no objects."""
    plain = (str, int, float, bool, type(None))
    config = {}
    for key, value in vars(args).items():
        if isinstance(value, (list, tuple)):
            value = [v if isinstance(v, plain) else str(v) for v in value]
        elif not isinstance(value, plain):
            value = str(value)
        config[key] = value
    return config


def read_checkpoint(spec: str | Path, what: str = "--resume") -> tuple[Path, dict[str, Any]]:
    """``(path, checkpoint)`` from a checkpoint file or the directory holding one; ``UserError``
    (its message starting with ``what``) unless it is a readable task checkpoint.

    Read with ``weights_only=True``: tensors and plain data only, so a crafted file cannot run code.
    """
    path = Path(spec)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"{what}: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _forbidden_global(str(exc))
        if not found:  # not a pickle at all
            raise UserError(f"{what}: {path} is not a readable checkpoint (UnpicklingError)") from None
        # A pickled object: memfn writes tensors and plain data only, so this is foreign (or crafted).
        raise UserError(
            f"{what}: {path} refused: it holds Python objects ({found}), not just tensors and plain data "
            "(memfn checkpoints never do; loading it could run code)"
        ) from None
    except Exception as exc:  # corrupt or not a torch file
        raise UserError(f"{what}: {path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt:
        raise UserError(f"{what}: {path} is not a memfn task checkpoint")
    return path, ckpt


def _forbidden_global(message: str) -> str:
    """The global (``os.system``, a class) that torch's weights-only unpickler refused, or ''."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    return "an unsupported object" if "Unsupported global" in message else ""


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def weights_mismatch(weights: Any, expected: dict[str, Tensor]) -> str:
    """Why ``weights`` cannot be loaded into a model whose state dict is ``expected`` ('' if it can)."""
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        return f"expected a state dict of tensors, got a {type(weights).__name__}"
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        return f"{len(missing)} missing and {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]!r}"
    for k, v in expected.items():
        if weights[k].shape != v.shape:
            return f"{k} has shape {tuple(weights[k].shape)}, the options give {tuple(v.shape)}"
        if weights[k].dtype != v.dtype:
            return f"{k} has dtype {weights[k].dtype}, the model's is {v.dtype}"
    return ""


def load_checkpoint(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    path, ckpt = read_checkpoint(spec)
    missing = [k for k in ("optimizer", "rng", "iteration", "max_length") if k not in ckpt]
    if missing:
        raise UserError(f"--resume: {path} cannot be resumed: it lacks {', '.join(missing)}")
    # Options added after a checkpoint was written take their defaults; the faiss index only
    # matters with --knn faiss.
    saved = {**OPTION_DEFAULTS, **ckpt["config"]}
    compared = [k for k in MODEL_OPTIONS if k != "index" or "faiss" in (saved.get("knn"), args.knn)]
    diff = {k: (saved.get(k), getattr(args, k)) for k in compared if saved.get(k) != getattr(args, k)}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise UserError(f"--resume: {path} is incompatible with these options ({shown})")
    ckpt["path"] = str(path)
    return ckpt


def run_folder(args: argparse.Namespace) -> Path:
    """This run's plot folder under ``--plot-dir``: named after ``--checkpoint-dir`` (so a resumed
    run keeps adding to it), else after the start time, task and memory."""
    if args.checkpoint_dir:
        name = Path(args.checkpoint_dir).resolve().name
    else:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.task}-{args.memory_type}"
    return Path(args.plot_dir) / name


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint's weights and optimiser state; ``UserError`` naming what does not fit."""
    mismatch = weights_mismatch(ckpt["model"], model.state_dict())
    if mismatch:
        raise UserError(f"--resume: {ckpt['path']} holds weights that do not fit this model ({mismatch})")
    model.load_state_dict(ckpt["model"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = _one_line(exc)
        raise UserError(f"--resume: {ckpt['path']} has an optimizer state that does not fit ({reason})") from None


class Logger:
    """Progress bar, plain lines, plots, TensorBoard and visdom: only rank 0 has one that acts.

    The bar is drawn only on a terminal; otherwise (a log file, a pipe) each summary is one line."""

    def __init__(self, args: argparse.Namespace, task: Task, active: bool, start: int) -> None:
        self.args, self.task, self.active = args, task, active
        self.history: dict[str, list[Any]] = {"iteration": [], "loss": [], "metric": []}
        self.bar = None
        self.writer = None
        self.viz = None
        self.plot_dir = run_folder(args) if args.plot_dir else None
        if not active:
            return
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm  # type: ignore[import-untyped]  # no tqdm stubs installed

            self.bar = tqdm(total=args.iterations, initial=start, desc=f"{task.name} {args.memory_type}", unit="it")
        if self.plot_dir is not None:
            self.line(f"plots: {self.plot_dir}")
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(args.tensorboard)
        if args.visdom:
            self.viz = _connect_visdom()

    def line(self, text: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def summary(self, it: int, loss: float, metric: float, debug: dict[str, Any] | None) -> None:
        if not self.active:
            return
        name = self.task.metric_name
        self.history["iteration"].append(it)
        self.history["loss"].append(loss)
        self.history["metric"].append(metric)
        self.line(f"iter {it} loss {loss:.6g} {name} {metric:.6g}")
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, it)
            self.writer.add_scalar(name, metric, it)
            self.writer.flush()
        if self.plot_dir is not None:
            from memfn.viz import plot_memory, plot_training_curve, thin_plots

            if debug is not None:
                title = f"{self.task.name}, {self.args.memory_type}, iteration {it}"
                plot_memory(debug, self.plot_dir / f"memory_iter{it:07d}.png", title)
                thin_plots(self.plot_dir, "memory_iter*.png", self.args.plot_keep)
            h = self.history
            plot_training_curve(h["iteration"], h["loss"], h["metric"], name, self.plot_dir / "training_curve.png")
        if self.viz is not None and debug is not None:
            _send_to_visdom(self.viz, debug, it, loss, self.task.metric_name, metric)

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}")

    def close(self, reason: str = "done") -> None:
        """End the bar with why the run stopped (``done``, ``target reached``, ``interrupted``, ...)."""
        if self.bar is not None:
            self.bar.set_postfix_str(reason)
            self.bar.total = self.bar.n  # no stale percentage or time left after an early stop
            self.bar.refresh()
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _connect_visdom() -> Any:
    try:
        import visdom
    except ImportError:
        print('visdom: not installed (pip install -e ".[visdom]", see the README); continuing without it',
              file=sys.stderr)  # fmt: skip
        return None
    viz = visdom.Visdom(server="http://localhost", port=int(os.environ.get("VISDOM_PORT", 8097)),
                        raise_exceptions=False, use_incoming_socket=False)  # fmt: skip
    if not viz.check_connection(timeout_seconds=3):  # type: ignore[call-arg]  # visdom's .pyi lacks it
        print("visdom: no server answers on localhost; continuing without it", file=sys.stderr)
        return None
    return viz


def _send_to_visdom(viz: Any, debug: dict[str, Any], it: int, loss: float, metric_name: str, metric: float) -> None:
    """Heatmaps of the memory, the link matrix, usage, read and write weights, and the curves."""
    from memfn.viz import METRIC_LABELS, MemoryViews

    v = MemoryViews(debug)
    cells = v.shown_cells()
    usage = "steps since last access" if v.sparse else "usage"
    maps = {
        "memory": (v.memory[cells], f"memory (iteration {it}, last step)", "word element", "cell"),
        "usage": (v.usage[:, cells].T, f"{usage} (iteration {it})", "step", "cell"),
        "write_weights": (v.write[:, cells].T, f"write weighting (iteration {it})", "step", "cell"),
        "read_weights": (v.read[:, :, cells].sum(1).T, f"read weightings, all heads (iteration {it})", "step", "cell"),
    }
    if v.link is not None:
        maps["link_matrix"] = (v.link[np.ix_(cells, cells)], f"link matrix (iteration {it}, last step)",
                               "from cell j", "to cell i")  # fmt: skip
    for win, (array, title, xlabel, ylabel) in maps.items():
        viz.heatmap(array, win=win, opts={"title": title, "xlabel": xlabel, "ylabel": ylabel})
    viz.line(X=[it], Y=[loss], win="loss", update="append", opts={"title": "training loss", "xlabel": "iteration"})
    label = METRIC_LABELS.get(metric_name, metric_name)
    viz.line(X=[it], Y=[metric], win=metric_name, update="append", opts={"title": label, "xlabel": "iteration"})


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def evaluate(model: nn.Module, task: Task, length: int, batch_size: int, generator: torch.Generator,
             debug: bool = False) -> tuple[float, float, dict[str, Any] | None]:  # fmt: skip
    """Loss and metric on a fresh batch at ``length`` (no gradients); the debug record of its first
    sequence if asked."""
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training, was_debug = net.training, net.debug
    net.eval()
    net.debug = debug
    try:
        with torch.no_grad():
            batch = task.sample(batch_size, length, generator)
            result = net(batch.inputs.to(next(net.parameters()).device), None, reset_experience=True)
            output = result[0].cpu()
            record = result[2] if debug else None  # batch element 0
            return task.loss(output, batch).item(), task.metric(output, batch), record
    finally:
        net.train(was_training)
        net.debug = was_debug


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train as the options say; returns the final generalisation results (metric per length)."""
    check_args(args)
    task = make_task(args)
    check_paths(args)
    ckpt = load_checkpoint(args.resume, args) if args.resume else None  # before anything is written
    rank, world = _distributed()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(args)
    device = next(model.parameters()).device
    optimizer = build_optimizer(args, model.parameters())
    data_gen = torch.Generator().manual_seed(args.seed * 1000 + rank)
    eval_gen = torch.Generator().manual_seed(10**6 + args.seed)
    start, max_length = 1, args.sequence_max_length
    if ckpt is not None:
        restore(ckpt, model, optimizer)
        try:
            rng = ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            data_gen.set_state(rng["data"][rank] if world == len(rng["data"]) else rng["data"][0])
            eval_gen.set_state(rng["eval"])
            start, max_length = int(ckpt["iteration"]) + 1, int(ckpt["max_length"])
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
            raise UserError(f"--resume: {ckpt['path']} has a damaged random state ({_one_line(exc)})") from None
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    log = Logger(args, task, active=rank == 0, start=start - 1)
    if ckpt is not None:
        log.history = ckpt.get("history", log.history)
        log.line(f"resumed from iteration {ckpt['iteration']}")

    last = (math.nan, math.nan)
    saved_at = ckpt["iteration"] if ckpt is not None else None
    t0 = time.perf_counter()
    it = start - 1
    reason = "done"
    for it in range(start, args.iterations + 1):
        length = int(torch.randint(task.min_length, max_length + 1, (1,), generator=data_gen))
        batch = task.sample(args.batch_size, length, data_gen)
        output, _ = ddp(batch.inputs.to(device), None, reset_experience=True)
        loss = task.loss(output, batch._replace(targets=batch.targets.to(device)))
        # Stop before the step (a NaN loss, or gradients that overflowed): the weights, and so the
        # last checkpoint, stay the last good ones.
        if not torch.isfinite(loss):
            log.close("stopped: NaN loss")
            raise TrainingDiverged(f"the loss became {loss.item()} at iteration {it}{_kept(saved_at)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch
        norm = nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        if not torch.isfinite(norm):
            log.close("stopped: gradients overflowed")
            raise TrainingDiverged(f"the gradient norm became {norm.item()} at iteration {it}{_kept(saved_at)}")
        optimizer.step()
        log.step(loss.item())
        if args.curriculum_increment and it % args.curriculum_freq == 0:
            max_length += args.curriculum_increment
            for cap in (task.max_length, args.curriculum_max):  # graph tasks: no larger graph than the ids allow
                max_length = max_length if cap is None else min(max_length, cap)
        if it % args.summarize_freq == 0:
            # The metric comes from a fresh batch at the current longest length: the training batch
            # has a random length, and short ones make any model look perfect.
            want_plot = rank == 0 and bool(args.plot_dir or args.visdom)
            # At least 32 sequences, whatever the batch size: one sequence (argmax's -batch_size 1)
            # makes the metric all or nothing.
            size = max(args.batch_size, SUMMARY_SEQUENCES)
            _, metric, debug = evaluate(model, task, max_length, size, eval_gen, debug=want_plot)
            last = (loss.item(), metric)
            log.summary(it, loss.item(), metric, debug)
        target = args.stop_at is not None and it % args.summarize_freq == 0 and _reached(task, last[1], args.stop_at)
        out_of_time = args.max_seconds is not None and time.perf_counter() - t0 >= args.max_seconds and not target
        if args.max_seconds is not None and world > 1:  # every rank stops at the same iteration (rank 0's clock)
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.broadcast(flag, 0)
            out_of_time = bool(flag.item())
        if out_of_time and it % args.summarize_freq != 0:  # the final model's metric, summarised
            _, metric, debug = evaluate(model, task, max_length, max(args.batch_size, SUMMARY_SEQUENCES), eval_gen,
                                        debug=rank == 0 and bool(args.plot_dir or args.visdom))  # fmt: skip
            last = (loss.item(), metric)
            log.summary(it, loss.item(), metric, debug)
        stopping = target or out_of_time
        # Every check_freq iterations, and the final model whenever the run ends.
        save = it % args.check_freq == 0 or it == args.iterations or stopping
        if args.checkpoint_dir and rank == 0 and save:
            save_checkpoint(Path(args.checkpoint_dir) / CHECKPOINT_NAME, {
                "config": plain_config(args), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "data": _gather_states(data_gen, world),
                        "eval": eval_gen.get_state()},
                "iteration": it, "max_length": max_length, "history": log.history,
            })  # fmt: skip
            saved_at = it
        elif args.checkpoint_dir and world > 1 and save:
            _gather_states(data_gen, world)
        if target:
            log.line(f"stopping at iteration {it}: {task.metric_name} {last[1]:.6g} reached --stop-at {args.stop_at}")
            reason = f"target reached ({task.metric_name} {last[1]:.4g})"
            break
        if out_of_time:
            log.line(f"stopping at iteration {it}: --max-seconds {args.max_seconds:g} reached")
            reason = f"time budget reached ({task.metric_name} {last[1]:.4g})"
            break
    seconds = time.perf_counter() - t0
    results: dict[str, Any] = {"iterations": it, "seconds": seconds, "loss": last[0], task.metric_name: last[1]}
    log.close(reason)
    if rank == 0:
        lengths = args.eval_lengths or [max_length * multiple for multiple in task.eval_multiples]
        for length in dict.fromkeys(lengths):  # each once, in the order given
            _, metric, _ = evaluate(model, task, length, 100, eval_gen)
            results[f"{task.metric_name}@{length}"] = metric
            extra = f", {metric / (length * (args.input_size - 1)):.2%} of bits" if task.name == "copy" else ""
            log.line(f"generalisation length {length}: {task.metric_name} {metric:.4g}{extra}")
        log.line(f"trained {it - start + 1} iterations in {seconds:.1f} s")
    if world > 1:
        # Rank 0 evaluates alone; tearing down gloo while it still talks to its peers aborts them.
        dist.barrier()
        dist.destroy_process_group()
    return results


def _kept(saved_at: int | None) -> str:
    kept = f"; the checkpoint of iteration {saved_at} is kept" if saved_at else ""
    return f"{kept}; try a lower -lr or -clip"


def _gather_states(gen: torch.Generator, world: int) -> list[Tensor]:
    state = gen.get_state()
    if world == 1:
        return [state]
    out = [torch.empty_like(state) for _ in range(world)]
    dist.all_gather(out, state)
    return out


def _reached(task: Task, metric: float, target: float) -> bool:
    return metric >= target if task.higher_is_better else metric <= target


def run_command(prog: str, command: Callable[[], object]) -> int:
    """Exit status of ``command()``: 0; 2 after one ``error:`` line for a :class:`UserError` or a
    model that does not fit in memory; 1 after one line when training diverged; 130 on Ctrl-C."""
    try:
        command()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # memfn states sizes before allocating; torch may not
        if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
            raise
        reason = _one_line(exc) or "out of memory"
        print(f"{prog}: error: the model does not fit in memory: {reason}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def _out_of_memory(exc: RuntimeError) -> bool:
    """torch's allocation failures (CPU ``DefaultCPUAllocator``, CUDA ``OutOfMemoryError``)."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def parse_args(task: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``tasks/<task>_task.py argv`` as :func:`train` takes them (``UserError`` on a mistake)."""
    args = build_parser(task).parse_args(argv)
    args.task = task
    if task == "argmax":  # argmax scores positions with the output features: room for the longest sequence
        longest = args.sequence_max_length + args.curriculum_increment * (
            args.iterations // max(args.curriculum_freq, 1)
        )
        args.output_size = max(args.input_size, longest)
    else:  # the papers' tasks read fewer (or more) features than they take
        try:
            args.output_size = TASKS[task](args.input_size).output_size
        except ValueError:
            args.output_size = None  # check_args reports the -input_size
    return args


def main(task: str, argv: list[str] | None = None) -> int:
    return run_command(build_parser(task).prog, lambda: train(parse_args(task, argv)))
