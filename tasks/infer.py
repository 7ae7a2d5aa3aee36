#!/usr/bin/env python3
"""Run a checkpoint of the task scripts on task data, compiled; export its single step (see --help)."""

import sys

from memfn.tasks.infer import main

if __name__ == "__main__":
    sys.exit(main())
