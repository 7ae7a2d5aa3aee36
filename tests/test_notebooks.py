"""The notebooks: committed without outputs, and each runs top to bottom (nbclient, this interpreter's
``python3`` kernel) without writing anything into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = ["composing_memory_ops", "property_testing_addressing", "compiled_inference"]
#: Top-level folders a test run may change anyway (the tools' own caches, not the notebooks').
IGNORED = {".git", ".venv", "venv", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache"}


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def repository_files() -> set[str]:
    found = set()
    for directory, subdirs, files in os.walk(ROOT):
        top = Path(directory) == ROOT
        subdirs[:] = [
            d for d in subdirs if d != "__pycache__" and not (top and (d in IGNORED or d.endswith(".egg-info")))
        ]
        found.update(str(Path(directory, f).relative_to(ROOT)) for f in files)
    return found


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in notebook_paths()) == sorted(NAMES)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stale, f"{path.name}: cells {stale} keep outputs; clear them (Kernel > Restart & Clear Output)"
    assert nb.metadata["kernelspec"]["name"] == "python3"


# The training and compile notebooks take 1-3 minutes each: they run under -m slow (CI runs both).
@pytest.mark.parametrize(
    "name", [n if n == "property_testing_addressing" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    # The kernel imports this checkout's memfn, and trains its own small checkpoint.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MEMFN_CHECKPOINT", str(tmp_path / "no-checkpoint"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's migration warning otherwise
    nb = nbformat.read(path, as_version=4)
    before = repository_files()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
    assert repository_files() == before, "the notebook wrote files into the repository"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, "every notebook shows plots"
