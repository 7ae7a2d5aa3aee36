"""Property-based testing of memories: hypothesis strategies, invariant checkers, ``check_memory``."""

try:
    import hypothesis  # noqa: F401
except ImportError as err:  # memfn itself does not need hypothesis; only this module does
    raise ImportError(
        'memfn.testing needs hypothesis: pip install -e ".[testing]" (in a checkout) or pip install "memfn[testing]"'
    ) from err

from memfn.testing import invariants, strategies
from memfn.testing.battery import PROPERTIES, MemoryCheckError, MemoryReport, Property, PropertyFailure, check_memory
from memfn.testing.invariants import *  # noqa: F403
from memfn.testing.strategies import *  # noqa: F403

__all__ = [
    "PROPERTIES",
    "MemoryCheckError",
    "MemoryReport",
    "Property",
    "PropertyFailure",
    "check_memory",
    "invariants",
    "strategies",
    *invariants.__all__,
    *strategies.__all__,
]
