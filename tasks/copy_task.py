#!/usr/bin/env python3
"""Train a memory network on the copy task (pytorch-dnc's command line; see --help)."""

import sys

from memfn.tasks.train import main

if __name__ == "__main__":
    sys.exit(main("copy"))
