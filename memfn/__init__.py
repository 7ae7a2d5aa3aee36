"""memfn: functional Differentiable Neural Computers on ``torch.func``.

The pure core (unbatched, immutable state pytrees; batch with ``vmap``, compile with
``torch.compile``) and the building blocks it is made of: the dense DNC memory (``dnc``), the
sparse ones (``sam``, ``sdnc``), controllers, the cell and runner, and the ``nn.Module`` shells
``DNC``, ``SAM`` and ``SDNC`` (drop-ins for pytorch-dnc).
"""

from memfn import addressing, compat, nn, numerics, sparse
from memfn._dnc import DNCState, dnc
from memfn._dnc import read as dnc_read
from memfn._dnc import write as dnc_write
from memfn._memory import Memory, unchecked
from memfn.addressing import (
    allocation_weights,
    content_weights,
    directional_read_weights,
    forward_backward_read_weights,
    link_matrix,
    precedence,
    read_vectors,
    read_weights,
    retention,
    updated_memory,
    usage,
    write_weights,
)
from memfn.cell import Cell, CellState, batch_state, batched_step, memory_cell, run
from memfn.controllers import Controller, LSTMState, RNNState, controller, gru, lstm, rnn
from memfn.interface import DNCInterface, dnc_interface_size, split_dnc_interface
from memfn.nn import DNC, SAM, SDNC, MemoryNetwork, MemoryView, clone, detach
from memfn.numerics import cosine_similarity, exclusive_cumprod, oneplus, weighted_softmax
from memfn.sparse import SAMState, SDNCState, sam, sdnc

__version__ = "0.1.0"

#: The public API (pinned by tests/test_public_api.py).
__all__ = [
    "Cell",
    "CellState",
    "Controller",
    "DNC",
    "DNCInterface",
    "DNCState",
    "LSTMState",
    "Memory",
    "MemoryNetwork",
    "MemoryView",
    "RNNState",
    "SAM",
    "SAMState",
    "SDNC",
    "SDNCState",
    "addressing",
    "allocation_weights",
    "batch_state",
    "batched_step",
    "clone",
    "compat",
    "content_weights",
    "controller",
    "cosine_similarity",
    "detach",
    "directional_read_weights",
    "dnc",
    "dnc_read",
    "dnc_write",
    "dnc_interface_size",
    "exclusive_cumprod",
    "forward_backward_read_weights",
    "gru",
    "link_matrix",
    "lstm",
    "memory_cell",
    "nn",
    "numerics",
    "oneplus",
    "precedence",
    "read_vectors",
    "read_weights",
    "retention",
    "rnn",
    "run",
    "sam",
    "sdnc",
    "sparse",
    "split_dnc_interface",
    "updated_memory",
    "unchecked",
    "usage",
    "weighted_softmax",
    "write_weights",
]
