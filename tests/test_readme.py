"""The README's Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_each_readme_snippet_runs_on_its_own(index):
    """Each block is pasted alone into a fresh interpreter namespace (no names from earlier blocks)."""
    exec(compile(SNIPPETS[index], f"{README}, Python block {index + 1}", "exec"), {})


QUICK_START = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_quick_start_is_two_commands_that_pin_the_cpu_torch():
    commands = re.findall(r"```bash\n(.*?)\n```", QUICK_START, flags=re.S)
    assert len(commands) == 2
    assert all("torch==2.13.0" in c and "\n" not in c for c in commands)
    assert "tasks/copy_task.py" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    """.ci/run calls the README's test command exactly (so a green CI means a green fresh clone)."""
    test_command = re.findall(r"```bash\n(.*?)\n```", QUICK_START, flags=re.S)[1]
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
