"""The task scripts: pytorch-dnc's command lines, logging, plots, checkpoints and resume, errors."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from memfn.tasks import AddingTask, ArgmaxTask, CopyTask
from memfn.tasks.train import build_model, build_optimizer, build_parser

ROOT = Path(__file__).resolve().parents[1]
SMALL = "-nhid 16 -mem_slot 8 -mem_size 6 -read_heads 1 -batch_size 4 -summarize_freq 1 --quiet".split()
LINE = re.compile(r"^iter (\d+) loss (\S+) (\w+) (\S+)$", re.M)


def run_task(task: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::UserWarning", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "tasks" / f"{task}_task.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def losses(stdout: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in LINE.finditer(stdout)}


def test_defaults_are_pytorch_dnc_copy_defaults():
    args = build_parser("copy").parse_args([])
    expected = dict(input_size=6, nhid=64, nhlayer=2, nlayer=1, mem_size=20, mem_slot=16, read_heads=4,
                    sparse_reads=10, temporal_reads=2, lr=1e-4, optim="adam", clip=50, batch_size=100,
                    sequence_max_length=4, summarize_freq=100, check_freq=100, memory_type="dnc",
                    rnn_type="lstm", cuda=-1, visdom=False)  # fmt: skip
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize("dash", ["-", "--"])
def test_options_accept_single_and_double_dashes(dash):
    argv = f"{dash}lr 0.01 {dash}mem_slot 9 {dash}checkpoint-dir c {dash}plot-dir p {dash}seed 3".split()
    args = build_parser("copy").parse_args(argv)
    assert (args.lr, args.mem_slot, args.checkpoint_dir, args.plot_dir, args.seed) == (0.01, 9, "c", "p", 3)


def test_task_data_follow_pytorch_dnc():
    g = torch.Generator().manual_seed(0)
    b = CopyTask(6).sample(3, 4, g)
    assert b.inputs.shape == (3, 9, 6) and b.targets.shape == (3, 4, 5)
    assert torch.equal(b.inputs[:, :4, :5], b.targets) and (b.inputs[:, 4, 5] == 1).all()
    assert (b.inputs[:, 5:] == 0).all()
    a = AddingTask(5).sample(2, 7, g)
    assert torch.equal(a.targets, a.inputs[:, :7, :4].argmax(-1).sum(1).float())
    assert (a.inputs[:, -1, 4] == 1).all()
    m = ArgmaxTask(5).sample(50, 6, g)
    numbers = m.inputs[:, :6, :4].argmax(-1)
    assert torch.equal(numbers.gather(1, m.targets[:, None]).squeeze(1), numbers.max(1).values)


def test_copy_perfect_output_has_zero_bit_errors():
    task = CopyTask(6)
    b = task.sample(4, 3, torch.Generator().manual_seed(1))
    perfect = torch.zeros(4, 7, 6)
    perfect[:, 4:, :5] = b.targets * 20 - 10
    assert task.metric(perfect, b) == 0
    assert task.metric(-perfect, b) == 15  # every bit wrong: 3 steps x 5 bits


def test_short_run_logs_plots_and_checkpoints(tmp_path):
    r = run_task("copy", *SMALL, "-iterations", "3", "-check_freq", "2", "--checkpoint-dir", str(tmp_path / "c"),
                 "--plot-dir", str(tmp_path / "p"), "-cuda", "0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(losses(r.stdout)) == [1, 2, 3]
    assert all(m.group(3) == "bit_errors" for m in LINE.finditer(r.stdout))
    assert "generalisation length 8" in r.stdout
    assert (tmp_path / "c" / "checkpoint.pt").is_file()
    run_plots = tmp_path / "p" / "c"  # one folder per run, named after --checkpoint-dir
    assert (run_plots / "training_curve.png").is_file()
    assert len(list(run_plots.glob("memory_iter*.png"))) == 3
    assert f"plots: {run_plots}" in r.stdout
    ckpt = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 3 and {"model", "optimizer", "rng", "max_length"} <= set(ckpt)  # the final model


# Subprocess-heavy (10-30 s each): under -m slow, which CI runs too.
@pytest.mark.slow
def test_interrupted_then_resumed_run_gives_the_same_losses(tmp_path):
    common = [*SMALL, "-iterations", "30", "-check_freq", "5", "-curriculum_increment", "1", "-curriculum_freq",
              "7", "-dropout", "0.2", "--plot-dir", ""]  # fmt: skip
    full = run_task("copy", *common)
    assert full.returncode == 0, full.stderr
    ckdir = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tasks" / "copy_task.py"), *common, "--checkpoint-dir", str(ckdir)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it mid-way, once a checkpoint past iteration 10 exists
        path = ckdir / "checkpoint.pt"
        if path.exists() and torch.load(path, weights_only=False)["iteration"] >= 10:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(ckdir / "checkpoint.pt", weights_only=False)["iteration"]
    assert 10 <= stopped_at < 30
    resumed = run_task("copy", *common, "--checkpoint-dir", str(ckdir), "--resume", str(ckdir))
    assert resumed.returncode == 0, resumed.stderr
    after = losses(resumed.stdout)
    assert sorted(after) == list(range(stopped_at + 1, 31))
    assert after == {i: v for i, v in losses(full.stdout).items() if i > stopped_at}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-memory_type", "foo"], "argument -memory_type/--memory_type: invalid choice: 'foo'"),
        (["-optim", "bar"], "invalid choice: 'bar'"),
        (["-mem_slot", "0"], "-mem_slot must be >= 1, got 0"),
        (["--eval-lengths", "4", "0"], "--eval-lengths must all be >= 1, got 4 0"),
        (["--resume", "/nonexistent/ckpt"], "--resume: no checkpoint at /nonexistent/ckpt"),
        (["-memory_type", "sam", "-mem_slot", "8"], "-sparse_reads must be <= -mem_slot (8), got 10"),
        (
            ["-memory_type", "sdnc", "-sparse_reads", "4", "-temporal_reads", "9", "-mem_slot", "8"],
            "-temporal_reads must be <= -mem_slot (8), got 9",
        ),  # fmt: skip
    ],
)
def test_user_mistakes_give_one_error_line(argv, message, capsys):
    # In process (the script's main): the same code path as the command line, without a new
    # interpreter per case; test_threads_below_one_are_refused runs one such mistake as a script.
    from memfn.tasks.train import main

    assert main("copy", argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


# Subprocess-heavy (10-30 s each): under -m slow, which CI runs too.
@pytest.mark.slow
def test_incompatible_resume_fails_without_overwriting(tmp_path):
    r = run_task("copy", *SMALL, "-iterations", "2", "-check_freq", "2", "--checkpoint-dir", str(tmp_path),
                 "--plot-dir", "")  # fmt: skip
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "checkpoint.pt").read_bytes()
    bad = run_task("copy", *[a if a != "16" else "32" for a in SMALL], "-iterations", "4",
                   "--checkpoint-dir", str(tmp_path), "--resume", str(tmp_path))  # fmt: skip
    assert bad.returncode == 2 and "incompatible" in bad.stderr and "nhid: checkpoint 16 vs now 32" in bad.stderr
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    worse = run_task("copy", *SMALL, "--resume", str(garbage))
    assert worse.returncode == 2 and "not a readable checkpoint" in worse.stderr
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


# Subprocess-heavy (10-30 s each): under -m slow, which CI runs too.
@pytest.mark.slow
def test_checkpoints_without_the_newer_options_still_resume(tmp_path):
    r = run_task("copy", *SMALL, "-iterations", "2", "--checkpoint-dir", str(tmp_path), "--plot-dir", "")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    for key in ("knn", "index"):  # written before these options existed
        del ckpt["config"][key]
    torch.save(ckpt, path)
    resumed = run_task("copy", *SMALL, "-iterations", "3", "--resume", str(path), "--plot-dir", "")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(losses(resumed.stdout)) == [3]


@pytest.mark.parametrize("task,metric", [("adding", "abs_error"), ("argmax", "accuracy")])
def test_adding_and_argmax_run(task, metric):
    r = run_task(task, *SMALL, "-input_size", "5", "-sequence_max_length", "6", "-iterations", "2", "--plot-dir", "")
    assert r.returncode == 0, r.stderr
    assert {m.group(3) for m in LINE.finditer(r.stdout)} == {metric}


def test_eval_lengths_choose_the_held_out_lengths():
    r = run_task("copy", *SMALL, "-iterations", "1", "--plot-dir", "", "--eval-lengths", "3", "5", "3")
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^generalisation length (\d+):", r.stdout, re.M) == ["3", "5"]
    # argmax scores as many positions as its longest training sequence: longer ones cannot be evaluated.
    r = run_task("argmax", *SMALL, "-sequence_max_length", "6", "-iterations", "1", "--eval-lengths", "7")
    assert r.returncode == 2
    assert r.stderr.strip().endswith("--eval-lengths must be <= 6 for argmax: the model scores that many positions")


# The sparse command lines, verbatim but for a few iterations (and no plots in the repo).
SPARSE_COMMANDS = {
    "copy": "-cuda 0 -lr 0.001 -rnn_type lstm -memory_type sdnc -nlayer 1 -nhlayer 2 -dropout 0 -mem_slot 100 "
    "-mem_size 10 -read_heads 1 -sparse_reads 4 -temporal_reads 4 -batch_size 20 -optim adam -sequence_max_length 4 "
    "-curriculum_increment 2 -curriculum_freq 10000",
    "argmax": "-memory_type sam -mem_slot 500 -read_heads 2 --knn faiss --index ivf",  # ours: the faiss index
    "adding": "-cuda 0 -lr 0.0001 -rnn_type lstm -memory_type sam -nlayer 1 -nhlayer 1 -nhid 100 -dropout 0 "
    "-mem_slot 1000 -mem_size 32 -read_heads 1 -sparse_reads 4 -batch_size 20 -optim rmsprop -input_size 3 "
    "-sequence_max_length 100",
}


# Subprocess-heavy (10-30 s each): under -m slow, which CI runs too.
@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(SPARSE_COMMANDS))
def test_sparse_memory_command_lines_run(task, tmp_path):
    argv = SPARSE_COMMANDS[task].split() + ["-iterations", "2", "-summarize_freq", "1", "--quiet"]
    r = run_task(task, *argv, "--plot-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert sorted(losses(r.stdout)) == [1, 2]
    assert (tmp_path / tmp_path.name / "memory_iter0000002.png").exists() and (tmp_path / "checkpoint.pt").exists()


def test_tensorboard_scalars_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = run_task("copy", *SMALL, "-iterations", "3", "--plot-dir", "", "--tensorboard", str(tmp_path))
    assert r.returncode == 0, r.stderr
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "bit_errors"}
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    logged = {int(i): float(v) for i, v in losses(r.stdout).items()}
    assert [round(e.value, 4) for e in events.Scalars("loss")] == [round(logged[i], 4) for i in (1, 2, 3)]


def test_visdom_without_a_server_is_one_message_and_no_crash():
    env_port = {"VISDOM_PORT": "1"}  # nothing listens there
    r = run_task("copy", *SMALL, "-iterations", "1", "--plot-dir", "", "-visdom", env=env_port)
    assert r.returncode == 0, r.stderr
    try:
        import visdom  # noqa: F401
    except ImportError:
        assert 'visdom: not installed (pip install -e ".[visdom]", see the README)' in r.stderr
    else:
        assert "visdom: no server answers on localhost; continuing without it" in r.stderr


# Subprocess-heavy (10-30 s each): under -m slow, which CI runs too.
@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tasks" / "copy_task.py"), *SMALL, "-iterations", "4", "-check_freq", "4",
         "--checkpoint-dir", str(tmp_path), "--plot-dir", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(losses(r.stdout)) == [1, 2, 3, 4]  # rank 0 alone logs
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 4 and len(ckpt["rng"]["data"]) == 2
    # Gradients were averaged: replaying both ranks' batches in one process (the mean of their
    # gradients, then clipping and the optimiser step) gives the parameters rank 0 saved.
    args = argparse.Namespace(**ckpt["config"])
    torch.manual_seed(args.seed)
    model = build_model(args)
    optimizer = build_optimizer(args, model.parameters())
    task = CopyTask(args.input_size)
    gens = [torch.Generator().manual_seed(args.seed * 1000 + rank) for rank in range(2)]
    for _ in range(4):
        grads = []
        for gen in gens:
            length = int(torch.randint(1, args.sequence_max_length + 1, (1,), generator=gen))
            batch = task.sample(args.batch_size, length, gen)
            output, _ = model(batch.inputs, None, reset_experience=True)
            grads.append(torch.autograd.grad(task.loss(output, batch), list(model.parameters())))
        for p, *g in zip(model.parameters(), *grads):
            p.grad = sum(g) / len(g)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][name], msg=name)


@pytest.fixture
def visdom_server():
    """A real visdom server on loopback (started without its CDN downloads: no internet here)."""
    pytest.importorskip("visdom")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from visdom.server.run_server import main; sys.argv = sys.argv[:1] + sys.argv[1:]; main()"
    server = subprocess.Popen(
        [sys.executable, "-c", code, "-port", str(port), "--hostname", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import visdom

    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait for the port before a client connects
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        with warnings.catch_warnings():  # visdom's client logs through the deprecated Logger.warn
            warnings.simplefilter("ignore", DeprecationWarning)
            client = visdom.Visdom(
                server="http://127.0.0.1", port=port, raise_exceptions=True, use_incoming_socket=False
            )
        yield port, client
    finally:
        server.kill()
        server.wait()


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("no headless Chromium (apt-get install chromium)")


@pytest.mark.slow
def test_visdom_page_shows_every_window_in_a_browser(visdom_server, tmp_path):
    """The seed's flow, offline: visdom's front-end files from npm, the server, a run with -visdom,
    and the page as a browser renders it (its DOM after the scripts ran, and a screenshot)."""
    from memfn.tasks import visdom_assets

    browser = _browser()
    static = visdom_assets.static_folder()
    if visdom_assets.missing(static):
        if not shutil.which("npm"):
            pytest.skip("visdom's front-end files are missing and npm is not installed to fetch them")
        visdom_assets.install(static)
    port, _ = visdom_server
    r = run_task("copy", *SMALL, "-iterations", "2", "--plot-dir", "", "-visdom",
                 env={**os.environ, "VISDOM_PORT": str(port)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    page = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1400",
            "--virtual-time-budget=15000"]  # fmt: skip
    dom = subprocess.run([*page, "--dump-dom", f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    for title in ("memory (iteration 2, last step)", "link matrix (iteration 2, last step)", "usage (iteration 2)",
                  "write weighting (iteration 2)", "read weightings, all heads (iteration 2)", "training loss",
                  "wrong bits per sequence"):  # fmt: skip
        assert title in dom, title
    shot = tmp_path / "visdom.png"
    subprocess.run([*page, f"--screenshot={shot}", f"http://127.0.0.1:{port}"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_visdom_windows_appear_on_a_real_server(visdom_server):
    port, client = visdom_server
    r = run_task(
        "copy", *SMALL, "-iterations", "2", "--plot-dir", "", "-visdom", env={**os.environ, "VISDOM_PORT": str(port)}
    )
    assert r.returncode == 0, r.stderr
    for window in ("memory", "link_matrix", "usage", "write_weights", "read_weights", "loss", "bit_errors"):
        assert client.win_exists(window), window


# -- progress, plots, threads ---------------------------------------------------------------------


def test_without_a_terminal_there_is_no_bar_but_one_line_per_summary():
    argv = [a for a in SMALL if a != "--quiet"]
    r = run_task("copy", *argv, "-iterations", "3", "--plot-dir", "")
    assert r.returncode == 0, r.stderr
    assert sorted(losses(r.stdout)) == [1, 2, 3]
    assert "\r" not in r.stderr and "it/s" not in r.stderr


def _logger(monkeypatch, tmp_path, **options):
    from memfn.tasks.train import Logger

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = build_parser("copy").parse_args(["-iterations", "10", "--plot-dir", str(tmp_path), *options.get("argv", [])])
    args.task = "copy"
    return Logger(args, CopyTask(6), active=True, start=0)


def test_the_bar_closes_with_the_reason_the_run_stopped(monkeypatch, tmp_path, capsys):
    log = _logger(monkeypatch, tmp_path)
    for _ in range(3):
        log.step(0.5)
    log.close("target reached (bit_errors 0)")
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "target reached (bit_errors 0)" in last and "3/3" in last and "100%" in last


def test_each_run_has_its_own_plot_folder_and_keeps_at_most_plot_keep_heatmaps(monkeypatch, tmp_path):
    import numpy as np

    import memfn

    first = _logger(monkeypatch, tmp_path, argv=["--plot-keep", "3"])
    assert first.plot_dir.parent == tmp_path and re.fullmatch(r"\d{8}-\d{6}-copy-dnc", first.plot_dir.name)
    rnn = memfn.DNC(6, 8, nr_cells=4, cell_size=3, read_heads=1, debug=True)
    debug = rnn(torch.randn(1, 3, 6))[2]
    for it in range(1, 6):
        first.summary(it, 1.0 / it, 0.0, debug)
    kept = sorted(p.name for p in first.plot_dir.glob("memory_iter*.png"))
    assert len(kept) <= 3 and kept[-1] == "memory_iter0000005.png" and kept[0] == "memory_iter0000001.png"
    assert (first.plot_dir / "training_curve.png").is_file()
    assert np.isfinite(first.history["loss"]).all()
    first.close()


def test_thin_plots_keeps_the_newest_and_a_spread(tmp_path):
    from memfn.viz import thin_plots

    for i in range(1, 21):
        (tmp_path / f"m{i:03d}.png").write_bytes(b"")
    left = [int(p.stem[1:]) for p in thin_plots(tmp_path, "m*.png", 5)]
    assert len(left) <= 5 and left[-1] == 20 and left[0] == 1
    assert sorted(int(p.stem[1:]) for p in tmp_path.glob("m*.png")) == left


def test_summaries_evaluate_at_least_32_sequences_and_threads_are_set(monkeypatch):
    import memfn.tasks.train as train_module

    sizes, threads = [], []
    real = train_module.evaluate
    monkeypatch.setattr(train_module, "evaluate", lambda m, t, length, size, *a, **k: (sizes.append(size),
                        real(m, t, length, size, *a, **k))[1])  # fmt: skip
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.append(n))
    argv = "-batch_size 1 -iterations 2 -summarize_freq 1 -nhid 8 -mem_slot 4 -mem_size 4 -read_heads 1 --quiet"
    args = build_parser("argmax").parse_args([*argv.split(), "--plot-dir", "", "--threads", "1"])
    args.task, args.output_size = "argmax", 6
    train_module.train(args)
    assert sizes[:2] == [32, 32] and threads == [1]


def test_threads_below_one_are_refused():
    r = run_task("copy", *SMALL, "--threads", "0", "--plot-dir", "")
    assert r.returncode == 2 and "-threads must be >= 1" in r.stderr
