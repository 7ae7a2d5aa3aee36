"""Property-based testing of memories: hypothesis strategies, invariant checkers and ``check_memory``.

Change an equation (a new allocation rule, a masked content lookup, a sparse variant) and let
hypothesis search for the state that breaks an invariant, then shrink it to a minimal one.
Install with the ``testing`` extra (it pulls in hypothesis; ``import memfn`` never needs it)::

    pip install -e ".[testing]"      # in a checkout;  pip install "memfn[testing]" otherwise

One call
--------
:func:`check_memory` runs every property that applies to a memory and reports each one that
fails with its shrunk example. It takes a :class:`~memfn._memory.Memory` or a factory returning one
(``memfn.dnc``, ``memfn.sam``, ``memfn.sdnc``, or your own), and draws the factory's size arguments
(``nr_cells``, ``cell_size``, ``read_heads``, and ``sparse_reads``/``temporal_reads`` if its
signature names them; pass ``sizes=`` for others)::

    from memfn.testing import check_memory

    def test_my_memory():
        check_memory(my_memory, max_examples=100)  # raises MemoryCheckError listing each failure

    report = check_memory(my_memory, raise_on_failure=False)
    print(report)                        # passed, failed (message + shrunk example), not applicable
    failure = report["link_matrix_is_valid"]
    failure.example.state, failure.example.xi  # the shrunk state and interface vector, to debug

A failure prints as the memory, the dtype, the walk from ``init()`` and the checked step, each
interface vector shown by its non-zero fields, e.g.::

    link_matrix_is_valid: link_matrix has a non-zero diagonal (a cell follows itself): 0.197917 at index (0, 0)
      shrunk example: my_dnc(nr_cells=1, cell_size=1, read_heads=1) in float32: init()
        step 0: xi = zeros
        checked step: xi = zeros

The properties (:data:`PROPERTIES`; ``properties=[...]`` picks some):

======================================== ===================================================================
``state_structure_is_preserved``         the new state has the input's pytree structure, shapes and dtypes;
                                         ``read_size`` read values
``values_are_finite``                    reads and state stay finite, for extreme but finite ``xi`` too
``step_is_pure``                         ``step`` mutates neither ``state`` nor ``xi`` (values and in-place
                                         version counters), and the same inputs give the same outputs
``gradients_are_finite_at_zero_memory``  gradients of the outputs reach ``xi`` and are finite at a zero memory
``vmap_equals_loop``                     ``vmap(step)`` over a batch equals stepping each example
``broadcast_equals_vmap``                ``step`` on states with a leading batch axis equals ``vmap(step)``
``usage_in_unit_interval``               ``usage_vector`` in [0, 1]
``access_stamps_in_range``               ``last_access`` in [0, ``time``] (SAM/SDNC usage stamps)
``read_weights_are_distributions``       non-negative, each head's summing to at most 1
``write_weights_are_distributions``      non-negative, summing to at most 1 (so the allocation does)
``precedence_is_a_distribution``         non-negative, summing to at most 1
``link_matrix_is_valid``                 entries in [0, 1], zero diagonal, rows and columns summing to at most 1
                                         (dense ``[N, N]``, or the SDNC's sparse ``link_positions`` views)
``only_write_rows_change``               a sparse step changes only rows among its ``write_positions``, at most
                                         ``R * P + 1`` (``read_positions`` ``[R, P]``; ``R * K + 1`` for SAM)
``compiled_equals_eager``                ``torch.compile(vmap(step))`` equals eager; only with ``compile=True``,
                                         on ``compile_examples`` examples, unshrunk (a compile takes ~30 s)
======================================== ===================================================================

The first six hold for any object satisfying the ``Memory`` protocol. The others are chosen by the
state's **field names**, so a memory of your own gets them by naming its NamedTuple fields like
memfn's (:class:`~memfn.DNCState`, :class:`~memfn.SAMState`, :class:`~memfn.SDNCState`); those it
lacks are reported as not applicable. Each property draws ``max_examples`` cases and checks every
step of each (the walk's and the last one), so a bug anywhere in the walk is found and shrunk too.

Cases and strategies
--------------------
A :class:`MemoryCase` is a recipe that shrinks well: sizes, a dtype (float32 or float64), a walk of
up to ``max_steps`` interface vectors from ``init()`` (a state the memory can really reach), an
adversarial edit of where the walk ended, and the next ``xi``. The edits (:data:`ADVERSARIES`) keep
the state valid: ``zero_memory``, ``duplicated_rows`` (ties in every lookup), ``saturated_usage``
(usage 1, or every cell just accessed), ``one_hot_weights`` and ``uniform_weights`` (previous read
and write weights). Interface vectors (:func:`interface_vectors`) mix floats in ``[-5, 5]`` with
``+-30`` (every gate and softmax saturated) and ``+-1e6`` (extreme but finite).

For properties of your own, draw from the same strategies::

    from hypothesis import given
    from memfn.testing import check_allocation, check_distribution, memory_cases, usage_vectors

    @given(memory_cases(memfn.dnc))
    def test_my_invariant(case):
        reads, state = case.memory.step(case.state, case.xi)
        assert (msg := check_distribution(state.read_weights, "read_weights")) is None, msg

    @given(usage_vectors())
    def test_my_allocation(u):
        assert (msg := check_allocation(my_allocation(u))) is None, msg

:func:`memory_sizes`, :func:`sizes_for`, :func:`memory_states` (states of one memory),
:func:`usage_vectors`, :func:`seeds` with :func:`random_tensor` (draw a seed, not the values) and
:func:`reached_state` complete the set.

Checkers
--------
Each checker returns ``None`` when its invariant holds and a message saying what broke (and where)
otherwise: :func:`check_finite`, :func:`check_unit_interval`, :func:`check_distribution`,
:func:`check_allocation`, :func:`check_link_matrix`, :func:`check_sparse_link_matrix`,
:func:`check_access_stamps`, :func:`check_state` (every field check that applies),
:func:`check_structure`, :func:`check_unchanged` (after :func:`snapshot`),
:func:`check_sparse_rows_changed` and :func:`compare_trees`. Bounds allow :func:`tolerance` of the
dtype (``sqrt(eps)``) for rounding.

Two comparisons are deliberately not bit-for-bit. A sparse memory picks cells by top-k, and between
cells with identical rows the pick depends on float rounding, which batched and unbatched kernels
do differently; the batching checks therefore compare sparse weightings as dense weights per class
of identical rows. And since parallel rows of different norms are within float32 rounding of each
other in cosine (~1e-8), those checks draw float64 states when float64 is among ``dtypes``.

Reproducibility: ``settings=hypothesis.settings(derandomize=True, database=None)`` gives the same
examples, and the same shrunk failures, on every run; by default the loaded hypothesis profile
decides. What the process imported before does not change them either: ``check_memory`` turns off
hypothesis's drawing of literals found in the source of the local modules loaded.
``notebooks/property_testing_addressing.ipynb`` shows ``check_memory`` catching a broken allocation
rule written in the notebook.
"""

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
