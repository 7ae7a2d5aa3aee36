"""The stateful shells: ``nn.Module`` drop-ins for pytorch-dnc's ``DNC``, ``SAM`` and ``SDNC``.

A shell holds the parameters, builds the hidden state and loops over time with the pure batched
step of :mod:`memfn.cell`; what pytorch-dnc's hidden states and debug records look like is
:mod:`memfn.compat`'s business, the maths the pure memories'.
"""

from memfn.nn._dnc import DNC
from memfn.nn._hidden import clone, detach
from memfn.nn._network import MemoryNetwork
from memfn.nn._sparse import SAM, SDNC
from memfn.nn._views import DenseMemoryView, MemoryView

__all__ = ["DNC", "DenseMemoryView", "MemoryNetwork", "MemoryView", "SAM", "SDNC", "clone", "detach"]
