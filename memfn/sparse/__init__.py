"""The sparse memories of Rae et al. (2016): SAM and the SDNC, their addressing and nearest-neighbour search.

- :func:`sam` / :func:`sdnc` build a :class:`~memfn.Memory` (pure ``init`` and ``step``); their
  states are :class:`SAMState` and :class:`SDNCState`.
- :mod:`memfn.sparse.addressing`: the sparse reads, writes and usage (one function per equation).
- :mod:`memfn.sparse.knn`: which K cells each read head looks at (exact top-k or faiss).

The in-place fast path the shells run (``memfn.SAM(..., fast=True)``) lives in private modules;
it runs the same named steps as the pure ``step`` on a store updated in place.
"""

from memfn.sparse import addressing, knn
from memfn.sparse._sam import SAMInterface, SAMState, sam, sam_interface_fields, split_sam_interface, usage
from memfn.sparse._sdnc import SDNCInterface, SDNCState, sdnc, sdnc_interface_fields, split_sdnc_interface

__all__ = [
    "SAMInterface",
    "SAMState",
    "SDNCInterface",
    "SDNCState",
    "addressing",
    "knn",
    "sam",
    "sam_interface_fields",
    "sdnc",
    "sdnc_interface_fields",
    "split_sam_interface",
    "split_sdnc_interface",
    "usage",
]
