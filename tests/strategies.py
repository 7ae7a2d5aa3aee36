"""Hypothesis strategies: memory sizes, and dense states reached by running random steps."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

import memfn

sizes = st.fixed_dictionaries(
    {
        "nr_cells": st.integers(1, 12),
        "cell_size": st.integers(1, 6),
        "read_heads": st.integers(1, 3),
    }
)
seeds = st.integers(0, 2**31 - 1)


def random_tensor(seed: int, *shape: int, scale: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=dtype)


def reached_state(mem: memfn.Memory, seed: int, steps: int, scale: float = 3.0):
    """The state after ``steps`` random interface vectors: a state the memory can really be in."""
    g = torch.Generator().manual_seed(seed)
    state = mem.init(torch.float64)
    for _ in range(steps):
        xi = scale * torch.randn(mem.interface_size, generator=g, dtype=torch.float64)
        _, state = mem.step(state, xi)
    return state


@st.composite
def dense_cases(draw, max_steps: int = 6):
    """(memory, reached state, next xi) for random sizes, histories and interface scales."""
    size = draw(sizes)
    mem = memfn.dnc(**size)
    seed = draw(seeds)
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    state = reached_state(mem, seed, draw(st.integers(0, max_steps)), scale)
    xi = random_tensor(seed + 1, mem.interface_size, scale=scale)
    return mem, state, xi


@st.composite
def usages(draw):
    """Usage vectors in [0, 1], including exact 0s, exact 1s and ties."""
    n = draw(st.integers(1, 16))
    values = draw(st.lists(st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)), min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.float64)
