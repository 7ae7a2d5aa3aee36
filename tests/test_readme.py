"""The README's Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


def test_readme_snippets_run_in_order():
    namespace: dict = {}
    for snippet in SNIPPETS:
        exec(compile(snippet, str(README), "exec"), namespace)


@pytest.mark.parametrize("command", re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S))
def test_quick_start_commands_pin_the_cpu_torch(command):
    assert "torch==2.13.0" in command
