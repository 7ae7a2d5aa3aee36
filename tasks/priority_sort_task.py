#!/usr/bin/env python3
"""Train a memory network on the priority sort task (the papers' tasks; see --help and memfn.tasks.paper_tasks)."""

import sys

from memfn.tasks.train import main

if __name__ == "__main__":
    sys.exit(main("priority_sort"))
