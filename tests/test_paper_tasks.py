"""The papers' tasks (issue 17): data, targets from inputs, metrics, and the scripts for every memory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from memfn.tasks import TASKS
from memfn.tasks.paper_tasks import (
    AssociativeRecallTask,
    GraphTraversalTask,
    KeyValueTask,
    PrioritySortTask,
    RepeatCopyTask,
    ShortestPathTask,
    _unique_shortest,
    distinct_codes,
)
from memfn.tasks.train import _reached, main

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["repeat_copy", "associative_recall", "priority_sort", "key_value", "graph_traversal", "shortest_path"]
BIT_TASKS = PAPER[:4]
GRAPH_TASKS = PAPER[4:]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(name: str):
    cls = TASKS[name]
    return cls(cls.default_input_size)


def test_every_task_has_a_script_of_the_copy_scripts_shape():
    copy = (ROOT / "tasks" / "copy_task.py").read_text()
    for name in PAPER:
        text = (ROOT / "tasks" / f"{name}_task.py").read_text()
        assert f'sys.exit(main("{name}"))' in text and text.count("\n") == copy.count("\n")


@pytest.mark.parametrize("name", PAPER)
def test_targets_follow_from_the_inputs(name):
    task = make(name)
    for length in (task.min_length, 5):
        b = task.sample(6, length, gen(length))
        again = task.batch_from_inputs(b.inputs)
        assert again.length == b.length == length
        assert torch.equal(again.targets, b.targets)
        assert b.inputs.shape[0] == 6 and b.inputs.shape[2] == task.input_size


@pytest.mark.parametrize("name", PAPER)
def test_the_same_generator_state_gives_the_same_batch(name):
    task = make(name)
    a, b = task.sample(3, 4, gen(7)), task.sample(3, 4, gen(7))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def _perfect(task, batch) -> torch.Tensor:
    """An output that answers every scored target right (logits +-10, or one-hot scores of 20)."""
    out = torch.zeros(batch.inputs.shape[0], batch.inputs.shape[1], task.output_size)
    if batch.targets.dtype == torch.long:  # graph: (B, steps, 3) source, destination, label
        steps = batch.targets.shape[1]
        offsets = (0, task.ids, 2 * task.ids)
        for k, off in enumerate(offsets):
            idx = batch.targets[..., k].clamp(min=0) + off
            out[:, -steps:].scatter_(-1, idx[..., None], 20.0)
        return out
    logits = torch.where(batch.targets >= 0, batch.targets * 20 - 10, torch.zeros_like(batch.targets))
    view = task._answer(out, batch)
    view.copy_(logits.reshape(view.shape))
    return out


@pytest.mark.parametrize("name", BIT_TASKS)
def test_bit_error_rate_is_zero_when_right_one_when_all_wrong_and_counts_one_bit(name):
    task = make(name)
    b = task.sample(5, 4, gen(1))
    perfect = _perfect(task, b)
    assert task.metric(perfect, b) == 0 and task.loss(perfect, b) < 1e-3
    flipped = perfect.clone()
    answer = task._answer(flipped, b)
    answer.neg_()  # every scored bit wrong (unscored outputs are 0 logits either way)
    assert task.metric(flipped, b) == 1.0
    one = perfect.clone()
    answer = task._answer(one, b)
    scored = (b.targets >= 0).reshape(answer.shape)
    first = scored.nonzero()[0]
    answer[tuple(first)] *= -1
    assert task.metric(one, b) == pytest.approx(1 / scored.sum().item())
    assert not task.higher_is_better and task.metric_name == "bit_error_rate"


@pytest.mark.parametrize("name", GRAPH_TASKS)
def test_edge_accuracy_is_one_when_right_and_counts_wrong_edges(name):
    task = make(name)
    b = task.sample(4, 6, gen(2))
    perfect = _perfect(task, b)
    assert task.metric(perfect, b) == 1.0 and task.loss(perfect, b) < 1e-3
    scored = (b.targets[..., 0] >= 0).sum().item()
    wrong = perfect.clone()
    steps = b.targets.shape[1]
    dst = wrong[0, -steps, task.ids : 2 * task.ids]  # example 0's first answer edge: another destination
    dst.copy_(dst.roll(1))
    assert task.metric(wrong, b) == pytest.approx(1 - 1 / scored)
    assert task.metric(torch.zeros_like(perfect) - perfect, b) == 0.0
    assert task.higher_is_better and task.metric_name == "edge_accuracy"


def test_stop_at_knows_which_way_is_better():
    assert _reached(make("graph_traversal"), 0.95, 0.9) and not _reached(make("graph_traversal"), 0.5, 0.9)
    assert _reached(make("repeat_copy"), 0.004, 0.01) and not _reached(make("repeat_copy"), 0.2, 0.01)
    assert _reached(TASKS["argmax"](6), 1.0, 0.9)


def test_repeat_copy_answers_the_sequence_r_times_then_the_end_flag():
    task = RepeatCopyTask(6)
    b = task.sample(8, 3, gen(3))
    assert b.inputs.shape == (8, 3 + 2 + 3 * 3, 6) and b.targets.shape == (8, 3 * 3 + 1, 5)
    for x, y in zip(b.inputs, b.targets):
        r = round(x[3, 5].item() * 3)
        assert 1 <= r <= 3 and x[3, 4] == 1
        assert torch.equal(y[: 3 * r, :4], x[:3, :4].repeat(r, 1))
        assert y[:, 4].tolist() == [float(t == 3 * r) for t in range(10)] and (y[3 * r :, :4] == -1).all()


def test_associative_recall_answers_the_item_after_the_query():
    task = AssociativeRecallTask(8)
    b = task.sample(20, 5, gen(4))
    assert b.inputs.shape == (20, 7, 8) and b.targets.shape == (20, 6)
    for x, y in zip(b.inputs, b.targets):
        items, query = x[:5, :6], x[5, :6]
        assert len({tuple(i.tolist()) for i in items}) == 5  # distinct items
        at = [i for i in range(4) if torch.equal(items[i], query)]
        assert len(at) == 1 and torch.equal(y, items[at[0] + 1]) and x[5, 6] == 1 and x[6, 7] == 1


def test_priority_sort_outputs_the_highest_priorities_first():
    task = PrioritySortTask(7)
    b = task.sample(10, 10, gen(5))
    assert b.inputs.shape == (10, 10 + 1 + 8, 7) and b.targets.shape == (10, 8, 5)  # 8 of 10, as 16 of 20
    for x, y in zip(b.inputs, b.targets):
        order = x[:10, 5].argsort(descending=True)[:8]
        assert torch.equal(y, x[order, :5])


def test_key_value_answers_each_query_keys_value():
    task = KeyValueTask(9)
    b = task.sample(10, 6, gen(6))
    assert b.inputs.shape == (10, 13, 9) and b.targets.shape == (10, 6, 4)
    for x, y in zip(b.inputs, b.targets):
        pairs = {tuple(k.tolist()): v for k, v in zip(x[:6, :4], x[:6, 4:8])}
        assert len(pairs) == 6 and x[6, 8] == 1
        for q, v in zip(x[7:, :4], y):
            assert torch.equal(pairs[tuple(q.tolist())], v)
        assert sorted(map(tuple, x[7:, :4].tolist())) == sorted(pairs)  # every key once, shuffled


def _edges(task, x, edges_n):
    return task._decode_edges(x[:edges_n])


def test_graph_traversal_follows_the_labels_through_the_graph():
    task = GraphTraversalTask(GraphTraversalTask.default_input_size)
    b = task.sample(10, 7, gen(7))
    edges_n = task.degree * 7
    assert b.inputs.shape == (10, edges_n + 1 + task.path_length, task.input_size)
    for x, y in zip(b.inputs, b.targets):
        edges = _edges(task, x, edges_n)
        assert len(edges) == edges_n and len({s for s, _ in edges}) == 7  # every node: degree edges
        assert all(src != dst for (src, _), dst in edges.items())
        node = int(x[edges_n, : task.ids].argmax())
        for t, (src, dst, label) in enumerate(y.tolist()):
            assert src == node and edges[(src, label)] == dst
            assert x[edges_n + 1 + t, 2 * task.ids + label] == 1
            node = dst


def test_shortest_path_answers_the_unique_shortest_path():
    task = ShortestPathTask(ShortestPathTask.default_input_size)
    b = task.sample(10, 8, gen(8))
    edges_n = task.degree * 8
    for x, y in zip(b.inputs, b.targets):
        edges = _edges(task, x, edges_n)
        start, goal = int(x[edges_n, : task.ids].argmax()), int(x[edges_n, task.ids : 2 * task.ids].argmax())
        dist, count = _unique_shortest(edges, start)
        path = [e for e in y.tolist() if e[0] >= 0]
        assert len(path) == dist[goal] and count[goal] == 1 and 1 <= len(path) <= task.max_path
        assert path[0][0] == start and path[-1][1] == goal
        assert all(edges[(s, lab)] == d for s, d, lab in path)
        assert (y[len(path) :] == -1).all()


def test_distinct_codes_are_distinct_and_refuse_too_many():
    codes = distinct_codes(50, 16, 4, gen(9))
    assert all(len({tuple(c.tolist()) for c in ex}) == 16 for ex in codes)
    with pytest.raises(ValueError, match="more than 4 bits"):
        distinct_codes(1, 17, 4, gen(9))


@pytest.mark.parametrize(
    "name,argv,message",
    [
        ("associative_recall", ["-sequence_max_length", "1"], "-sequence_max_length must be 2 to 64"),
        ("graph_traversal", ["--eval-lengths", "5", "13"], "--eval-lengths must be 3 to 12"),
        ("key_value", ["-input_size", "2"], "-input_size: key_value needs input_size >= 3"),
        ("shortest_path", ["-input_size", "10"], "-input_size: shortest_path needs input_size >= 11"),
    ],
)
def test_sizes_the_task_cannot_draw_are_one_error_line(name, argv, message, capsys):
    assert main(name, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


SMALL = "-nhid 12 -mem_slot 8 -mem_size 6 -read_heads 1 -sparse_reads 2 -temporal_reads 2 -batch_size 3".split()


@pytest.mark.parametrize("memory", ["dnc", "sam", "sdnc"])
@pytest.mark.parametrize("name", PAPER)
def test_each_script_trains_every_memory_type(name, memory, capsys, tmp_path):
    length = str(TASKS[name].min_length + 1)
    argv = [*SMALL, "-memory_type", memory, "-iterations", "2", "-summarize_freq", "2", "--quiet", "--plot-dir", "",
            "-sequence_max_length", length, "--eval-lengths", length, str(int(length) + 1)]  # fmt: skip
    if memory == "dnc" and name == "graph_traversal":  # checkpoints and plots: once
        argv += ["--checkpoint-dir", str(tmp_path / "ck"), "--plot-dir", str(tmp_path / "p")]
    assert main(name, argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    metric = TASKS[name].metric_name
    assert re.search(rf"^iter 2 loss \S+ {metric} \S+$", out, re.M), out
    lengths = re.findall(r"^generalisation length (\d+): " + metric, out, re.M)
    assert lengths == [length, str(int(length) + 1)]
    if "--checkpoint-dir" in argv:
        ckpt = torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)
        assert (
            ckpt["config"]["task"] == name
            and ckpt["config"]["output_size"] == TASKS[name](TASKS[name].default_input_size).output_size
        )
        assert (tmp_path / "p" / "ck" / "training_curve.png").is_file()


def test_max_seconds_stops_the_run_with_a_final_summary(capsys):
    argv = [*SMALL, "-iterations", "1000", "-summarize_freq", "500", "--quiet", "--plot-dir", "", "--max-seconds",
            "0.001", "-sequence_max_length", "3", "--eval-lengths", "3"]  # fmt: skip
    assert main("key_value", argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert re.search(r"^iter 1 loss \S+ bit_error_rate \S+$", out, re.M), out
    assert "stopping at iteration 1: --max-seconds 0.001 reached" in out and "trained 1 iterations" in out


# -- learning (the README's commands, shortened): -m slow -------------------------------------------


def _learn(name: str, command: str, capsys) -> dict[int, float]:
    """Train in process with the task script's loop; the held-out metric per evaluated length."""
    assert main(name, [*command.split(), "--quiet", "--plot-dir", "", "--threads", "1"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    metric = TASKS[name].metric_name
    return {int(n): float(v) for n, v in re.findall(rf"^generalisation length (\d+): {metric} (\S+)$", out, re.M)}


@pytest.mark.slow
def test_associative_recall_learns_with_the_dnc(capsys):
    # The README's command stops at 0 wrong bits at iteration 3,500 (288 s); 2,000 iterations take
    # about 3 minutes and were at 8-15 % wrong bits.
    command = "-sequence_max_length 6 -nhid 128 -read_heads 1 -mem_slot 32 -mem_size 16 -batch_size 32 -lr 0.003"
    rates = _learn("associative_recall", command + " -iterations 2000 --eval-lengths 6", capsys)
    assert rates[6] < 0.25, rates


def test_the_graph_curriculum_grows_the_graphs_up_to_curriculum_max(capsys):
    argv = [*SMALL, "-iterations", "4", "-summarize_freq", "4", "--quiet", "--plot-dir", "", "-sequence_max_length",
            "3", "-curriculum_increment", "1", "-curriculum_freq", "1", "--curriculum-max", "5"]  # fmt: skip
    assert main("graph_traversal", argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert re.findall(r"^generalisation length (\d+):", out, re.M) == ["5"]  # 3 -> 4 -> 5, then no larger
    assert main("graph_traversal", [*argv, "--curriculum-max", "2"]) == 2
    assert "--curriculum-max must be >= -sequence_max_length (3), got 2" in capsys.readouterr().err


@pytest.mark.slow  # about 10-20 s: the final evaluation scores 100 sequences per length and run
def test_the_comparison_benchmark_prints_one_table_row_per_run(monkeypatch, capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_tasks_benchmark", ROOT / "benchmarks" / "paper_tasks.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["paper_tasks.py", "--tasks", "associative_recall", "--memories", "dnc", "sam", "--iterations", "2",
            "--seconds", "60", "--sparse-cells", "16", "--checkpoint-root", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    bench.main()
    out = capsys.readouterr().out
    row = r"^\| associative_recall \| (\w+) \| 2 \| bit_error_rate \| 6: \S+, 12: \S+, 24: \S+ \|$"
    rows = re.findall(row, out, re.M)
    assert rows == ["dnc", "sam"], out
    monkeypatch.setattr("sys.argv", ["paper_tasks.py", "--evaluate", str(tmp_path / "associative_recall_sam"),
                                     "--mem-slot", "64", "--lengths", "6", "--sequences", "4"])  # fmt: skip
    bench.main()
    assert re.search(r"^length 6: bit_error_rate \S+ ", capsys.readouterr().out, re.M)
