"""tasks/infer.py: a checkpoint of the task scripts run compiled, the exported step, one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from memfn.addressing import _link_out_of_place, aten_decompositions, link_matrix
from memfn.tasks import TASKS, ArgmaxTask
from memfn.tasks import train as train_module
from memfn.tasks.infer import (
    check_lengths,
    export_step,
    generated_batches,
    load,
    load_step,
    main,
    run_inference,
)
from memfn.tasks.train import UserError

ROOT = Path(__file__).resolve().parents[1]
SMALL = "-nhid 16 -mem_slot 8 -mem_size 6 -read_heads 1 -batch_size 4 --quiet --plot-dir".split() + [""]
METRIC = re.compile(r"^bit_errors (\S+)$", re.M)
RATE = re.compile(r"^sequences/s (\S+) \((eager|compiled); (\d+) sequences", re.M)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A copy-task checkpoint written by the task script's own main (a few iterations)."""
    directory = tmp_path_factory.mktemp("ckpt")
    argv = [*SMALL, *"-iterations 3 -check_freq 3 -sequence_max_length 3 --checkpoint-dir".split(), str(directory)]
    assert train_module.main("copy", argv) == 0
    return directory / "checkpoint.pt"


def run_script(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    entry = ["-m", "memfn.tasks.infer"] if module else [str(ROOT / "tasks" / "infer.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *entry, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env)  # fmt: skip


def expected_metric(checkpoint: Path, batches: int, batch_size: int, length: int, seed: int) -> float:
    loaded = load(checkpoint)
    data = generated_batches(loaded.task, batches, batch_size, length, seed)
    with torch.no_grad():
        scores = [loaded.task.metric(loaded.model(b.inputs)[0], b) * batch_size for b in data]
    return sum(scores) / (batches * batch_size)


def test_eager_run_prints_metric_and_throughput(checkpoint, capsys):
    assert main([str(checkpoint), "--no-compile", "--batches", "3", "--batch-size", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "copy task, dnc memory of 8 cells x 6, 1 read heads" in out and "trained 3 iterations" in out
    rate = RATE.search(out)
    assert rate and float(rate.group(1)) > 0 and rate.group(2) == "eager" and rate.group(3) == "15"
    # The length defaults to the checkpoint's training length (3): 7 steps per copy sequence.
    assert "of 7 steps" in out
    assert float(METRIC.search(out).group(1)) == pytest.approx(expected_metric(checkpoint, 3, 5, 3, 1), abs=1e-5)


@pytest.mark.slow  # compiles or exports a whole step (10-15 s): CI runs it under -m slow
def test_compiled_script_matches_eager(checkpoint, tmp_path):
    out_file = tmp_path / "outputs.pt"
    r = run_script(str(checkpoint.parent), "--batches", "2", "--batch-size", "4", "--length", "5",
                   "--save-outputs", str(out_file))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert RATE.search(r.stdout).group(2) == "compiled"
    loaded = load(checkpoint)
    data = generated_batches(loaded.task, 2, 4, 5, seed=0)
    eager = run_inference(loaded.model, loaded.task, data, compile=False)
    torch.testing.assert_close(torch.load(out_file), torch.cat(eager.outputs), atol=1e-5, rtol=1e-5)
    assert float(METRIC.search(r.stdout).group(1)) == pytest.approx(eager.metric, abs=1e-5)


def test_inputs_file_gives_the_metric_of_its_sequences(checkpoint, tmp_path, capsys):
    loaded = load(checkpoint)
    data = generated_batches(loaded.task, 1, 7, 4, seed=3)[0]
    path = tmp_path / "inputs.pt"
    torch.save(data.inputs, path)
    # 7 sequences in batches of 3: the last batch is short (padded inside, cut from the outputs).
    assert main([str(checkpoint), "--inputs", str(path), "--batch-size", "3", "--no-compile"]) == 0
    out = capsys.readouterr().out
    with torch.no_grad():
        expected = loaded.task.metric(loaded.model(data.inputs)[0], data)
    assert float(METRIC.search(out).group(1)) == pytest.approx(expected, abs=1e-5)
    assert RATE.search(out).group(3) == "7"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_targets_follow_from_inputs(task):
    t = TASKS[task](max(6, TASKS[task].default_input_size))  # the graph tasks need more than 6 inputs
    batch = t.sample(5, 4, torch.Generator().manual_seed(2))
    again = t.batch_from_inputs(batch.inputs)
    assert again.length == batch.length and torch.equal(again.targets, batch.targets)


def test_export_round_trip_equals_eager(checkpoint, tmp_path, capsys):
    path = tmp_path / "step" / "copy.pt2"
    assert main([str(checkpoint), "--no-compile", "--batches", "1", "--batch-size", "2", "--export", str(path)]) == 0
    assert f"exported the single step to {path}" in capsys.readouterr().out
    step = load_step(path)
    assert (step.input_size, step.output_size) == (6, 6) and step.config["task"] == "copy"
    assert "memory.link_matrix" in step.state_names and len(step.state_names) == len(step.initial_leaves)
    model = load(checkpoint).model
    for batch in (1, 3):  # the batch axis is dynamic
        inputs = generated_batches(load(checkpoint).task, 1, batch, 4, seed=batch)[0].inputs
        with torch.no_grad():
            torch.testing.assert_close(step.run(inputs), model(inputs)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # 10-20 s each: CI runs it under -m slow
@pytest.mark.parametrize("memory", ["sam", "sdnc"])
def test_sparse_memory_checkpoints_run_and_export(memory, tmp_path, capsys):
    argv = [*SMALL, "-iterations", "2", "-memory_type", memory, "-sparse_reads", "2", "--checkpoint-dir", str(tmp_path)]
    assert train_module.main("copy", argv) == 0
    path = tmp_path / "step.pt2"
    assert main([str(tmp_path), "--no-compile", "--batches", "2", "--batch-size", "3", "--export", str(path)]) == 0
    assert f"{memory} memory of 8 cells x 6, 1 read heads (2 sparse reads)" in capsys.readouterr().out
    step, loaded = load_step(path), load(tmp_path)
    # Not all zeros, not all floats: the read slots start on cells 0, 1, ... as integer positions.
    positions = step.initial_leaves[step.state_names.index("memory.read_positions")]
    assert positions.dtype == torch.int64 and positions.tolist() == [list(range(positions.shape[-1]))]
    assert positions.shape[-1] == (2 if memory == "sam" else 2 + 2 * 2)  # K, or K + 2L temporal slots (L = 2)
    inputs = generated_batches(loaded.task, 1, 3, 4, seed=5)[0].inputs
    with torch.no_grad():
        torch.testing.assert_close(step.run(inputs), loaded.model(inputs)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # compiles or exports a whole step (10-15 s): CI runs it under -m slow
def test_exported_step_has_no_memfn_ops_and_loads_without_memfn(checkpoint, tmp_path):
    program = export_step(load(checkpoint).model)
    assert "memfn" not in program.graph_module.code
    path = tmp_path / "step.pt2"
    torch.export.save(program, path)
    code = (
        "import sys, torch\n"
        f"ep = torch.export.load({str(path)!r})\n"
        "state = tuple(torch.zeros(3, *s.shape[1:]) for s in ep.example_inputs[0][1])\n"
        "y, state = ep.module()(torch.ones(3, 6), state)\n"
        "assert y.shape == (3, 6) and 'memfn' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]


def test_decomposed_link_update_equals_the_custom_operator():
    g = torch.Generator().manual_seed(0)
    prev, p = torch.rand(2, 5, 5, generator=g), torch.rand(2, 5, generator=g)
    w = torch.softmax(torch.randn(2, 5, generator=g), -1)
    torch.testing.assert_close(_link_out_of_place(prev, p, w), link_matrix(prev, p, w))
    assert set(aten_decompositions()) == {
        torch.ops.memfn.link_matrix.default,
        torch.ops.memfn.forward_backward_read_weights.default,
    }


def _checkpoint_variants(tmp_path: Path, checkpoint: Path) -> dict[str, Path]:
    ckpt = torch.load(checkpoint, weights_only=False)
    files = {}

    def save(name: str, payload) -> None:
        files[name] = tmp_path / f"{name}.pt"
        torch.save(payload, files[name])

    save("wider", {**ckpt, "config": {**ckpt["config"], "nhid": 32}})
    save("no_task", {**ckpt, "config": {**ckpt["config"], "task": "sort"}})
    save("not_weights", {**ckpt, "model": [1, 2]})
    save("plain_dict", {"a": 1})
    save("wide_inputs", torch.zeros(2, 7, 5))
    save("flat_inputs", torch.zeros(7, 6))
    save("even_inputs", torch.zeros(2, 8, 6))
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    files["garbage"] = tmp_path / "garbage.pt"
    return files


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{missing}"], "checkpoint: no checkpoint at"),
        (["{garbage}"], "is not a readable checkpoint (UnpicklingError)"),
        (["{plain_dict}"], "is not a memfn task checkpoint"),
        (["{wider}"], "do not fit the model its options describe (controllers.0.weight_ih_l0 has shape (64, "),
        (["{not_weights}"], "expected a state dict of tensors, got a list"),
        (["{no_task}"], "names no known task (task='sort'"),
        (["{ckpt}", "--inputs", "{wide_inputs}"], "holds a tensor of shape (2, 7, 5), expected a tensor of shape "
         "(batch, time, input_size=6)"),
        (["{ckpt}", "--inputs", "{flat_inputs}"], "holds a tensor of shape (7, 6)"),
        (["{ckpt}", "--inputs", "{plain_dict}"], "holds a dict, expected a tensor"),
        (["{ckpt}", "--inputs", "{even_inputs}"], "copy inputs have 2 * length + 1 steps"),
        (["{ckpt}", "--inputs", "{garbage}"], "is not a readable tensor file"),
        (["{ckpt}", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["{ckpt}", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)  # fmt: skip
def test_mistakes_give_one_error_line(argv, message, checkpoint, tmp_path, capsys):
    files = {**_checkpoint_variants(tmp_path, checkpoint), "ckpt": checkpoint, "missing": tmp_path / "nope"}
    assert main([a.format(**files) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infer.py: error: ") and message in lines[0], err


def test_module_entry_point_reports_a_bad_checkpoint_in_one_line(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 10)
    r = run_script(str(tmp_path), module=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"infer.py: error: checkpoint: {tmp_path / 'checkpoint.pt'} is not a readable checkpoint (UnpicklingError)"
    ]


def test_argmax_sequences_longer_than_the_outputs_are_refused():
    task = ArgmaxTask(5)
    batches = [task.sample(2, 7, torch.Generator().manual_seed(0))]
    with pytest.raises(UserError, match="scores at most 6 positions .* got sequences of 7 numbers"):
        check_lengths(task, types.SimpleNamespace(output_size=6), batches)
    check_lengths(task, types.SimpleNamespace(output_size=7), batches)


# -- ahead-of-time compiled inference (AOTInductor) -----------------------------------------------


@pytest.mark.slow  # AOTInductor compiles C++ (about a minute): CI runs it under -m slow
def test_aot_package_runs_without_compiling_and_equals_eager(checkpoint, tmp_path, capsys):
    package = tmp_path / "copy.pt2"
    argv = [str(checkpoint), "--no-compile", "--batches", "2", "--batch-size", "3", "--seed", "4"]
    assert main([*argv, "--save-outputs", str(tmp_path / "eager.pt"), "--aot", str(package)]) == 0
    assert f"compiled the single step ahead of time into {package}" in capsys.readouterr().out
    assert main(["--load", str(package), "--batches", "2", "--batch-size", "3", "--seed", "4",
                 "--save-outputs", str(tmp_path / "aot.pt")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(AOT; no compile)" in out and "sequences/s" in out
    eager, aot = (torch.load(tmp_path / f, weights_only=True) for f in ("eager.pt", "aot.pt"))
    torch.testing.assert_close(aot, eager, rtol=1e-5, atol=1e-5)
    # The same length as the checkpoint's by default, and the metric of the eager run.
    assert float(METRIC.search(out).group(1)) == pytest.approx(expected_metric(checkpoint, 2, 3, 3, 4), abs=1e-5)


def test_load_needs_a_package_not_a_checkpoint(checkpoint, tmp_path, capsys):
    assert main([]) == 2
    assert "required: checkpoint (or --load PACKAGE.pt2" in capsys.readouterr().err
    assert main([str(checkpoint), "--load", str(tmp_path / "x.pt2")]) == 2
    assert main(["--load", str(tmp_path / "missing.pt2")]) == 2
    assert f"--load: no file at {tmp_path / 'missing.pt2'}" in capsys.readouterr().err
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    assert main(["--load", str(tmp_path / "junk.pt2")]) == 2
    assert "is not an AOTInductor package" in capsys.readouterr().err
    assert main(["--load", str(tmp_path / "junk.pt2"), "--no-compile"]) == 2
    assert "--load runs a compiled package as it is" in capsys.readouterr().err
    assert main([str(checkpoint), "--no-compile", "--aot", str(tmp_path / "step.zip")]) == 2
    assert "an AOTInductor package is a .pt2 file" in capsys.readouterr().err
