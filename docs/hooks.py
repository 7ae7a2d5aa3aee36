"""mkdocs hook: replace ``<!-- memfn-help: train TASK -->`` / ``<!-- memfn-help: infer -->`` with the
``--help`` text of the task scripts' own argparse parsers, so the options page cannot drift."""

from __future__ import annotations

import os
import re

MARKER = re.compile(r"<!-- memfn-help: (train \w+|infer) -->")


def _help(which: str) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for a stable page
    if which == "infer":
        from memfn.tasks.infer import build_parser

        parser = build_parser()
    else:
        from memfn.tasks.train import build_parser

        parser = build_parser(which.split()[1])
    return "```text\n" + parser.format_help().rstrip() + "\n```"


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(lambda m: _help(m.group(1)), markdown)
