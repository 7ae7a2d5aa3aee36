"""Learning checks: the copy task's published command learns, and generalises past its length.

The command is issue 6's learning target: the DNC with pytorch-dnc's copy defaults but for
``-batch_size 32 -sequence_max_length 4 -optim adam -lr 0.001``. Iteration counts, not seconds,
bound the runs (the machine is shared; times are in the issue note). The run is deterministic
for its seed on one thread.
"""

from __future__ import annotations

import re

import pytest
from test_tasks import LINE, run_task

COMMAND = "-batch_size 32 -sequence_max_length 4 -optim adam -lr 0.001".split()
OURS = "-iterations 3000 --quiet --eval-lengths 5 6 7 8 --plot-dir".split() + [""]
RATE = re.compile(r"^generalisation length (\d+): bit_errors \S+, ([\d.]+)% of bits$", re.M)


def train_copy(*extra: str) -> tuple[int | None, dict[int, float]]:
    """(first iteration whose logged bit errors are <= 0.04, % of wrong bits per held-out length)."""
    r = run_task("copy", *COMMAND, *OURS, *extra, timeout=900, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    first = next((int(m.group(1)) for m in LINE.finditer(r.stdout) if float(m.group(4)) <= 0.04), None)
    return first, {int(length): float(rate) for length, rate in RATE.findall(r.stdout)}


@pytest.mark.slow
def test_copy_learns_length_4_and_generalises_to_lengths_5_to_8():
    first, rates = train_copy()
    # pytorch-dnc needs about 5,000 iterations for 0.04 wrong bits per sequence on this command.
    assert first is not None and first <= 2000, first
    assert sorted(rates) == [5, 6, 7, 8]
    assert all(rate < 5.0 for rate in rates.values()), rates


@pytest.mark.slow
def test_with_torch_initialisation_the_same_command_does_not_generalise():
    # The contrast that motivates the memoryless default: the controller holds the short training
    # sequences itself and uses the memory as a scratch cell, which fails past length 4.
    _, rates = train_copy("--controller-init", "torch")
    assert rates[8] > 25.0, rates
