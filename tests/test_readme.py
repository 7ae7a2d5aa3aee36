"""The README's Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


def test_readme_snippets_run_in_order():
    namespace: dict = {}
    for snippet in SNIPPETS:
        exec(compile(snippet, str(README), "exec"), namespace)


QUICK_START = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_quick_start_is_two_commands_that_pin_the_cpu_torch():
    commands = re.findall(r"```bash\n(.*?)\n```", QUICK_START, flags=re.S)
    assert len(commands) == 2
    assert all("torch==2.13.0" in c and "\n" not in c for c in commands)
    assert "tasks/copy_task.py" in commands[0] and "pytest" in commands[1]
