"""memfn: functional Differentiable Neural Computers on ``torch.func``.

The pure core (unbatched, immutable state pytrees; batch with ``vmap``, compile with
``torch.compile``) and the building blocks it is made of: the dense DNC memory (``dnc``), the
sparse ones (``sam``, ``sdnc``), controllers, the cell and runner, and the ``nn.Module`` shells
``DNC``, ``SAM`` and ``SDNC`` (drop-ins for pytorch-dnc).
"""

from memfn import addressing, knn, numerics, sparse_addressing
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
from memfn.dense import DNCState, dnc
from memfn.interface import DNCInterface, dnc_interface_size, split_dnc_interface
from memfn.memory import Memory
from memfn.modules import DNC, MemoryNetwork, MemoryView, clone, detach
from memfn.numerics import cosine_similarity, exclusive_cumprod, oneplus, weighted_softmax
from memfn.sparse import SAMState, sam
from memfn.sparse_modules import SAM, SDNC
from memfn.sparse_temporal import SDNCState, sdnc

__version__ = "0.1.0"

__all__ = [
    "DNC",
    "SAM",
    "SAMState",
    "SDNC",
    "SDNCState",
    "knn",
    "sam",
    "sdnc",
    "sparse_addressing",
    "MemoryNetwork",
    "MemoryView",
    "clone",
    "detach",
    "Cell",
    "CellState",
    "Controller",
    "DNCInterface",
    "DNCState",
    "LSTMState",
    "Memory",
    "RNNState",
    "addressing",
    "allocation_weights",
    "batch_state",
    "batched_step",
    "content_weights",
    "controller",
    "cosine_similarity",
    "directional_read_weights",
    "dnc",
    "dnc_interface_size",
    "exclusive_cumprod",
    "forward_backward_read_weights",
    "gru",
    "link_matrix",
    "lstm",
    "memory_cell",
    "numerics",
    "oneplus",
    "precedence",
    "read_vectors",
    "read_weights",
    "retention",
    "rnn",
    "run",
    "split_dnc_interface",
    "updated_memory",
    "usage",
    "weighted_softmax",
    "write_weights",
]
