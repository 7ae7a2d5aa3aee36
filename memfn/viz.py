"""Plots of what a memory did: heatmaps of one sequence, training curves.

Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no backend is
chosen or switched (scripts stay headless, a notebook keeps its inline backend and can show the
returned figure), and nothing is left open in pyplot's global figure list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def memory_figure(debug: Mapping[str, np.ndarray], title: str = ""):
    """A ``matplotlib`` figure from a ``debug=True`` dictionary (rows are steps): heatmaps of usage,
    read and write weights over time, and the final link matrix (dense DNC)."""
    from matplotlib.figure import Figure

    panels = [k for k in ("usage_vector", "usage", "write_weights", "read_weights") if k in debug]
    # The dense DNC's N x N links; the SDNC's sparse [N, L] rows are not a square picture.
    has_link = "link_matrix" in debug and "rev_link_matrix" not in debug
    fig = Figure(figsize=(4 * (len(panels) + has_link), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels) + has_link))
    for ax, key in zip(axes, panels):
        image = ax.imshow(debug[key].T, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set(title=key.replace("_", " "), xlabel="step", ylabel="cell" if key != "read_weights" else "head x cell")
        fig.colorbar(image, ax=ax, fraction=0.046)
    if has_link:
        link = debug["link_matrix"][-1]
        n = int(round(np.sqrt(link.size)))
        image = axes[-1].imshow(link.reshape(n, n), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        axes[-1].set(title="link matrix (last step)", xlabel="from cell j", ylabel="to cell i")
        fig.colorbar(image, ax=axes[-1], fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_memory(debug: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Save :func:`memory_figure` as a PNG; returns the path written."""
    return _save(memory_figure(debug, title), path)


def plot_training_curve(
    iterations: Sequence[int], losses: Sequence[float], metrics: Sequence[float], metric_name: str, path: str | Path
) -> Path:
    """Loss and task metric against iterations, side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    a, b = fig.subplots(1, 2)
    a.plot(iterations, losses)
    a.set(title="loss", xlabel="iteration", yscale="log")
    b.plot(iterations, metrics, color="tab:orange")
    b.set(title=metric_name.replace("_", " "), xlabel="iteration")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
