"""Plots of what a memory did (headless matplotlib): heatmaps of one sequence, training curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory(debug: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Heatmaps from a ``debug=True`` dictionary (rows are steps): usage, read and write weights
    over time, and the final link matrix (dense DNC). Returns the PNG path written."""
    plt = _pyplot()
    panels = [k for k in ("usage_vector", "usage", "write_weights", "read_weights") if k in debug]
    # The dense DNC's N x N links; the SDNC's sparse [N, L] rows are not a square picture.
    has_link = "link_matrix" in debug and "rev_link_matrix" not in debug
    fig, axes = plt.subplots(1, len(panels) + has_link, figsize=(4 * (len(panels) + has_link), 3.6))
    axes = np.atleast_1d(axes)
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
    return _save(plt, fig, path)


def plot_training_curve(
    iterations: Sequence[int], losses: Sequence[float], metrics: Sequence[float], metric_name: str, path: str | Path
) -> Path:
    """Loss and task metric against iterations, side by side."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(iterations, losses)
    a.set(title="loss", xlabel="iteration", yscale="log")
    b.plot(iterations, metrics, color="tab:orange")
    b.set(title=metric_name.replace("_", " "), xlabel="iteration")
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
