"""Plots of what a memory did: heatmaps of one sequence, training curves.

Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no backend is
chosen or switched (scripts stay headless, a notebook keeps its inline backend and can show the
returned figure), and nothing is left open in pyplot's global figure list.

The input is a ``debug=True`` dictionary in pytorch-dnc 1.1.0's layout: one row per step (per
layer), each row a flattened view of batch element 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

#: At most this many cells are drawn per panel: beyond it, the cells the sequence touched most.
MAX_CELLS = 64

#: Axis labels of the task metrics the task scripts report.
METRIC_LABELS = {
    "bit_errors": "wrong bits per sequence",
    "abs_error": "absolute error of the sum",
    "accuracy": "accuracy (fraction right)",
}


class MemoryViews:
    """The panels' arrays from a debug dictionary: sizes, and ``[steps, N]`` weightings."""

    def __init__(self, debug: Mapping[str, np.ndarray]) -> None:
        self.sparse = "usage" in debug  # SAM/SDNC: usage as steps since each cell's last access
        self.usage = np.asarray(debug["usage" if self.sparse else "usage_vector"], dtype=float)
        self.steps, self.cells = self.usage.shape
        self.write = np.asarray(debug["write_weights"], dtype=float).reshape(self.steps, -1, self.cells).sum(1)
        self.read = np.asarray(debug["read_weights"], dtype=float).reshape(self.steps, -1, self.cells)  # [T, R, N]
        self.memory = np.asarray(debug["memory"], dtype=float)[-1].reshape(self.cells, -1)  # last step, [N, W]
        self.link = self._last_link(debug)

    def _last_link(self, debug: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The last step's link matrix ``[N, N]`` (the SDNC's sparse rows spread out densely)."""
        if "link_matrix" not in debug:
            return None
        values: np.ndarray = np.asarray(debug["link_matrix"], dtype=float)[-1]
        if "link_positions" not in debug:
            return values.reshape(self.cells, self.cells)
        dense = np.zeros((self.cells, self.cells))
        columns = np.asarray(debug["link_positions"])[-1].reshape(self.cells, -1)
        np.add.at(dense, (np.arange(self.cells)[:, None], columns), values.reshape(self.cells, -1))
        return dense

    def shown_cells(self) -> np.ndarray:
        """The cells to draw: all of them up to :data:`MAX_CELLS`, else the most read and written ones."""
        if self.cells <= MAX_CELLS:
            return np.arange(self.cells)
        activity = self.write.sum(0) + self.read.sum((0, 1))
        return np.sort(np.argsort(-activity, kind="stable")[:MAX_CELLS])


def memory_figure(debug: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """A ``matplotlib`` figure from a ``debug=True`` dictionary: usage, write and read weightings
    over the steps, the memory contents and (DNC, SDNC) the link matrix at the last step.

    With more than :data:`MAX_CELLS` cells, only the cells the sequence read and wrote most are
    drawn (their indices on the axis), so traces stay wider than a pixel at a million cells."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    v = MemoryViews(debug)
    cells = v.shown_cells()
    subset = "" if len(cells) == v.cells else f" ({len(cells)} most used of {v.cells:,} cells)"
    panels = 4 + (v.link is not None)
    fig = Figure(figsize=(4.2 * panels, 4.2))
    axes = fig.subplots(1, panels)

    def heat(ax: Axes, image: np.ndarray, title: str, xlabel: str, ylabel: str, bar: str, **kw: Any) -> AxesImage:
        shown = ax.imshow(image, aspect="auto", interpolation="nearest", **kw)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(shown, ax=ax, fraction=0.046).set_label(bar)
        return shown

    def cell_ticks(ax: Axes, axis: str = "y") -> None:
        ticks = np.linspace(0, len(cells) - 1, min(len(cells), 8)).round().astype(int)
        getattr(ax, f"set_{axis}ticks")(ticks, [str(c) for c in cells[ticks]])

    if v.sparse:
        heat(axes[0], v.usage[:, cells].T, "steps since last access", "step", "cell" + subset, "steps", cmap="viridis")
    else:
        heat(axes[0], v.usage[:, cells].T, "usage $u_t$", "step", "cell" + subset, "usage (0 free, 1 used)",
             cmap="viridis", vmin=0, vmax=1)  # fmt: skip
    heat(axes[1], v.write[:, cells].T, "write weighting $w^w_t$", "step", "cell", "weight", cmap="viridis",
         vmin=0, vmax=max(v.write.max(), 1e-9))  # fmt: skip
    heads = v.read.shape[1]
    reads = v.read[:, :, cells].transpose(1, 2, 0).reshape(heads * len(cells), v.steps)  # head-major rows
    heat(axes[2], reads, "read weightings $w^r_t$", "step", "cells of each head (as on the left)",
         "weight", cmap="viridis", vmin=0, vmax=max(reads.max(), 1e-9))  # fmt: skip
    for h in range(1, heads):
        axes[2].axhline(h * len(cells) - 0.5, color="white", linewidth=0.8)
    axes[2].set_yticks([(h + 0.5) * len(cells) - 0.5 for h in range(heads)], [f"head {h}" for h in range(heads)])
    for ax in axes[:2]:
        cell_ticks(ax)
    heat(axes[3], v.memory[cells], "memory $M$ (last step)", "word element", "cell", "value", cmap="coolwarm",
         vmin=-np.abs(v.memory).max() - 1e-9, vmax=np.abs(v.memory).max() + 1e-9)  # fmt: skip
    cell_ticks(axes[3])
    if v.link is not None:
        heat(axes[4], v.link[np.ix_(cells, cells)], "link matrix $L$ (last step)", "from cell j (written before)",
             "to cell i (written after)", "link strength", cmap="magma", vmin=0,
             vmax=max(v.link.max(), 1e-9))  # fmt: skip
        cell_ticks(axes[4])
        cell_ticks(axes[4], "x")
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
    a.set(title="training loss", xlabel="iteration", ylabel="loss (log scale)", yscale="log")
    b.plot(iterations, metrics, color="tab:orange")
    label = METRIC_LABELS.get(metric_name, metric_name.replace("_", " "))
    b.set(title=f"{label}, held-out batch", xlabel="iteration", ylabel=label)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def thin_plots(folder: str | Path, pattern: str, keep: int) -> list[Path]:
    """Delete files matching ``pattern`` in ``folder`` beyond ``keep``: every other one of the older
    files goes, the newest always stays, so a long run keeps a log-like spread. Returns those left."""
    files = sorted(Path(folder).glob(pattern))
    while len(files) > max(keep, 1):
        drop = files[1:-1:2] or files[:1]
        for path in drop:
            path.unlink(missing_ok=True)
        files = [f for f in files if f not in drop]
    return files


__all__ = [
    "MAX_CELLS",
    "METRIC_LABELS",
    "MemoryViews",
    "memory_figure",
    "plot_memory",
    "plot_training_curve",
    "thin_plots",
]
