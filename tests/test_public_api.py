"""The public surface, pinned: a name added to or dropped from an ``__all__`` fails here first.

Public modules are the ones listed below; every other module under ``memfn/`` has a ``_``-prefixed
name somewhere in its path (internals: importable, but not API). ``memfn.testing`` and
``memfn.tasks`` are pinned by their own tests.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import memfn

#: Each public module's ``__all__``, space-separated.
PUBLIC_API = {
    "memfn": (
        "Cell CellState Controller DNC DNCInterface DNCState LSTMState Memory MemoryNetwork MemoryView "
        "RNNState SAM SAMState SDNC SDNCState addressing allocation_weights batch_state batched_step clone "
        "compat content_weights controller cosine_similarity detach directional_read_weights dnc "
        "dnc_interface_size dnc_read dnc_write exclusive_cumprod forward_backward_read_weights gru "
        "link_matrix lstm memory_cell nn numerics oneplus precedence read_vectors read_weights retention rnn "
        "run sam sdnc sparse split_dnc_interface unchecked updated_memory usage weighted_softmax "
        "write_weights "
    ).split(),
    "memfn.addressing": (
        "ALLOCATION_EPS allocation_weights combined_write_weights content_weights deallocated_memory "
        "directional_read_weights forward_backward_read_weights link_matrix masked_content_weights "
        "multi_forward_backward_read_weights multi_read_weights multi_updated_memory "
        "multi_write_allocation_weights precedence read_vectors read_weights retention sharpened_weights "
        "updated_memory usage write_weights "
    ).split(),
    "memfn.cell": ("Cell CellState batch_state batched_step check_inputs memory_cell run ").split(),
    "memfn.compat": (
        "API_VERSIONS NOT_GIVEN cell_state debug_record describe dnc_api dnc_hidden memory_dict memory_state "
        "resolve_device shared_memory "
    ).split(),
    "memfn.controllers": ("Controller INITS LSTMState MEMORYLESS_GATE_BIAS RNNState controller gru lstm rnn ").split(),
    "memfn.interface": (
        "BACKWARD CONTENT DNCInterface FORWARD NUM_READ_MODES check_interface dnc_interface_size "
        "interface_field_sizes interface_layout split_dnc_interface "
    ).split(),
    "memfn.nn": ("DNC DenseMemoryView MemoryNetwork MemoryView SAM SDNC clone detach ").split(),
    "memfn.numerics": (
        "COSINE_EPS cosine_similarity exclusive_cumprod masked_cosine_similarity oneplus weighted_softmax "
    ).split(),
    "memfn.sparse": (
        "SAMInterface SAMState SDNCInterface SDNCState addressing knn sam sam_interface_fields sdnc "
        "sdnc_interface_fields split_sam_interface split_sdnc_interface usage "
    ).split(),
    "memfn.sparse.addressing": (
        "ACCESS_THRESHOLD coalesced dense_weights gather_rows last_access least_recently_used "
        "repeated_positions sparse_content_weights sparse_read_vectors sparse_updated_memory "
        "sparse_write_weights top_slots weights_at written_rows "
    ).split(),
    "memfn.sparse.knn": (
        "AUTO_EXACT_MAX_CELLS FAISS_INDEXES KNNConfig KNN_BACKENDS knn_config nearest_cells "
        "ranked_positions tie_scores "
    ).split(),
    "memfn.viz": (
        "MAX_CELLS METRIC_LABELS MemoryViews memory_figure plot_memory plot_training_curve thin_plots "
    ).split(),
}

#: Public packages whose submodules are public too (their own tests pin them).
OPEN_PACKAGES = ("memfn.testing", "memfn.tasks")


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_all_is_pinned(module):
    assert sorted(importlib.import_module(module).__all__) == sorted(PUBLIC_API[module])


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_every_exported_name_exists_and_is_public(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which does not exist"
        assert not name.startswith("_"), f"{module}.__all__ exports the private name {name!r}"


def test_every_other_module_is_private():
    """A new module is either private (``_name``) or added to the pinned surface on purpose."""
    for info in pkgutil.walk_packages(memfn.__path__, "memfn."):
        name = info.name
        if name in PUBLIC_API or name.startswith(OPEN_PACKAGES):
            continue
        assert any(part.startswith("_") for part in name.split(".")), f"{name} is public but not pinned here"


def test_top_level_exports_are_the_objects_of_their_modules():
    # memfn.dnc is the factory (not a module), memfn.sparse the package, memfn.nn the shells.
    assert callable(memfn.dnc) and callable(memfn.sam) and callable(memfn.sdnc)
    assert memfn.DNC is memfn.nn.DNC and memfn.SAM is memfn.nn.SAM and memfn.SDNC is memfn.nn.SDNC
    assert memfn.SAMState is memfn.sparse.SAMState and memfn.usage is memfn.addressing.usage
