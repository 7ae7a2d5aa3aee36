"""Test-wide settings: warnings are errors (pyproject), 200 examples per property, one CPU thread."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("quick", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# One intra-op thread unless asked otherwise: at these sizes it is as fast as two, and two threads
# slow down 20-50x while another process holds a core (a busy laptop, a shared CI machine).
torch.set_num_threads(int(os.environ.get("MEMFN_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
