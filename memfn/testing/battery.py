"""``check_memory``: every property of :mod:`memfn.testing` against one memory, each shrunk on failure."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import hypothesis
import optree
import torch
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from torch import Tensor

from memfn._memory import Memory
from memfn.testing.invariants import (
    STATE_INVARIANTS,
    Message,
    applicable,
    check_finite,
    check_sparse_rows_changed,
    check_structure,
    check_unchanged,
    compare_trees,
    named_leaves,
    snapshot,
)
from memfn.testing.strategies import (
    DTYPES,
    MemoryCase,
    as_factory,
    describe_factory,
    memory_cases,
    sizes_for,
)

if TYPE_CHECKING:
    from optree import PyTree


class Property(NamedTuple):
    """A property of a memory: ``check(case) -> Message`` over drawn :class:`MemoryCase` s.

    ``needs``: the state fields it reads (it is skipped for states without them); ``cases``:
    keyword arguments of :func:`memory_cases` it draws its cases with; ``prefer_float64``: draw
    float64 states only (if float64 is among the dtypes checked), for comparisons of two ways of
    computing the same step: a sparse memory's top-k choice between cells whose scores differ by
    less than float32 rounding (parallel rows of different norms: ~1e-8 apart in cosine) may
    legitimately flip between a batched and an unbatched kernel.
    """

    name: str
    doc: str
    check: Callable[[MemoryCase], Message]
    needs: tuple[str, ...] = ()
    cases: dict[str, Any] = {}
    prefer_float64: bool = False


def _each_step(check: Callable[[Any, Tensor, Tensor, Any, MemoryCase], Message]) -> Callable[[MemoryCase], Message]:
    """A case check from a per-step check: every step of the walk, then the checked step."""

    def over_steps(case: MemoryCase) -> Message:
        for i, (before, xi, reads, after) in enumerate(case.transitions):
            if message := check(before, xi, reads, after, case):
                where = "the checked step" if i == len(case.walk) else f"walk step {i}"
                return f"{message} (after {where})"
        return None

    return over_steps


def _state_invariant(name: str) -> Callable[[MemoryCase], Message]:
    check = STATE_INVARIANTS[name][1]
    return _each_step(lambda before, xi, reads, after, case: check(after, None))


def _fresh(tree: Any) -> Any:
    return optree.tree_map(lambda t: t.detach().clone(), tree)


def _purity(before: Any, xi: Tensor, reads: Tensor, after: Any, case: MemoryCase) -> Message:
    state, vector = _fresh(before), xi.detach().clone()
    saved_state, saved_xi = snapshot(state), snapshot(vector)
    first = case.memory.step(state, vector)
    if message := check_unchanged(saved_state, state, "state") or check_unchanged(saved_xi, vector, "xi"):
        return f"step mutated its input: {message}"
    second = case.memory.step(_fresh(before), xi.detach().clone())
    return compare_trees(second, first, "step gave different outputs for the same inputs", rtol=0.0, atol=0.0)


def _stacked(case: MemoryCase) -> tuple[Any, Tensor, Any]:
    """The steps of a case as one batch: ``(states, xis, (reads, new states) of a Python loop)``."""
    stack = lambda *xs: torch.stack(xs)  # noqa: E731
    steps = case.transitions
    states = optree.tree_map(stack, *[s[0] for s in steps])
    looped = optree.tree_map(stack, *[cast("PyTree[Tensor]", (s[2], s[3])) for s in steps])
    return states, torch.stack([s[1] for s in steps]), looped


def _close(dtype: torch.dtype, loose: bool = False) -> dict[str, float]:
    tight = dtype == torch.float64
    if loose:  # compiled kernels fuse and reorder float arithmetic
        return {"rtol": 1e-7, "atol": 1e-7} if tight else {"rtol": 1e-4, "atol": 1e-4}
    return {"rtol": 1e-9, "atol": 1e-9} if tight else {"rtol": 1e-5, "atol": 1e-5}


#: Sparse weightings: the positions leaf of each values leaf (a slot's cell, and its weight there).
SPARSE_PAIRS = {
    "read_weights": "read_positions",
    "write_weights": "write_positions",
    "precedence": "precedence_positions",
    "link_matrix": "link_positions",
    "rev_link_matrix": "rev_link_positions",
}


def _up_to_ties(output: tuple[Tensor, Any], expected_memory: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """One example's ``(reads, state)`` as compared by the batching checks: a sparse memory picks its
    cells by top-k, and between cells of *identical* rows the pick depends on float rounding, which
    differs between batched and unbatched kernels (a dense DNC has no such choice). So sparse
    weightings are compared as dense weights per class of identical rows, and access stamps by
    their latest per class; everything else (reads included) leaf by leaf. The classes come from
    ``expected_memory``, the same for both sides of a comparison."""
    reads, state = output
    fields = getattr(state, "_fields", ())
    if expected_memory is None or not any(f.endswith("_positions") for f in fields):
        return reads, dict(named_leaves(state, "state"))
    memory = expected_memory
    n = memory.shape[-2]
    same = (memory.unsqueeze(-2) == memory.unsqueeze(-3)).all(-1)  # [N, N] identical rows
    first = same.int().argmax(-1)  # each cell's class: the first cell with its row
    classes = torch.nn.functional.one_hot(first, n).to(memory.dtype)  # [N, C]
    compared = {}
    for field in fields:
        value = getattr(state, field)
        if field in SPARSE_PAIRS and SPARSE_PAIRS[field] in fields:
            dense = value.new_zeros(*value.shape[:-1], n).scatter_add(-1, getattr(state, SPARSE_PAIRS[field]), value)
            dense = dense @ classes
            compared[field] = classes.T @ dense if field.endswith("link_matrix") else dense  # rows are cells too
        elif field == "last_access":
            compared[field] = torch.zeros_like(value).scatter_reduce(0, first, value, "amax")
        elif not field.endswith("_positions"):
            compared[field] = value
    return reads, compared


def _compare_batches(actual: Any, expected: Any, what: str, **tolerances: float) -> Message:
    """Compare two batched ``(reads, state)`` outputs example by example, up to ties (:func:`_up_to_ties`)."""
    batch = actual[0].shape[0]
    for b in range(batch):
        a, e = (cast(tuple[Tensor, Any], optree.tree_map(lambda t, b=b: t[b], out)) for out in (actual, expected))
        memory = getattr(e[1], "memory", None)
        if message := compare_trees(
            _up_to_ties(a, memory), _up_to_ties(e, memory), f"{what}, at example {b}", **tolerances
        ):
            return message
    return None


def _vmap_equals_loop(case: MemoryCase) -> Message:
    states, xis, looped = _stacked(case)
    vmapped = torch.func.vmap(case.memory.step)(states, xis)
    return _compare_batches(
        vmapped, looped, f"vmap over {xis.shape[0]} examples differs from a loop", **_close(case.dtype)
    )


def _broadcast_equals_vmap(case: MemoryCase) -> Message:
    states, xis, _ = _stacked(case)
    vmapped = torch.func.vmap(case.memory.step)(states, xis)
    broadcast = case.memory.step(states, xis)
    what = f"step on a batch of {xis.shape[0]} (leading axis) differs from vmap"
    return _compare_batches(broadcast, vmapped, what, **_close(case.dtype))


def _compiled_equals_eager(case: MemoryCase) -> Message:
    states, xis, _ = _stacked(case)
    batched = torch.func.vmap(case.memory.step)
    # Every drawn memory is a new closure: without a reset, dynamo would stop compiling after its
    # recompile limit and silently run eager, and this check would pass vacuously.
    torch._dynamo.reset()
    compiled = torch.compile(batched)(states, xis)
    what = "torch.compile(vmap(step)) differs from eager"
    return _compare_batches(compiled, batched(states, xis), what, **_close(case.dtype, loose=True))


def _finite_values(before: Any, xi: Tensor, reads: Tensor, after: Any, case: MemoryCase) -> Message:
    return check_finite(reads, "reads") or check_finite(after, "state")


def _structure(before: Any, xi: Tensor, reads: Tensor, after: Any, case: MemoryCase) -> Message:
    return check_structure(before, after, reads, case.memory.read_size)


def _sparse_rows(before: Any, xi: Tensor, reads: Tensor, after: Any, case: MemoryCase) -> Message:
    return check_sparse_rows_changed(before, after)


def _gradients_at_zero_memory(case: MemoryCase) -> Message:
    leaves, spec = optree.tree_flatten(case.state)
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in leaves]
    xi = case.xi.detach().clone().requires_grad_()
    reads, after = case.memory.step(optree.tree_unflatten(spec, leaves), xi)
    outputs = [o for o in (reads, *optree.tree_leaves(after)) if o.requires_grad]
    if not outputs:
        return "no gradient reaches the reads or the new state"
    # A fixed random projection rather than a plain sum, whose gradient through a softmax is 0.
    g = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    inputs = [("xi", xi)] + [(n, t) for (n, _), t in zip(named_leaves(case.state, "state"), leaves) if t.requires_grad]
    grads = torch.autograd.grad(loss, [t for _, t in inputs], allow_unused=True)
    if grads[0] is None:
        return "no gradient reaches xi from the reads and the new state"
    for (name, _), grad in zip(inputs, grads):
        if grad is not None and (message := check_finite(grad, f"d loss / d {name}")):
            return message
    return None


def _properties() -> dict[str, Property]:
    found = [
        Property(
            "state_structure_is_preserved",
            "step returns a state of the input's structure, shapes and dtypes, and read_size read values",
            _each_step(_structure),
        ),
        Property(
            "values_are_finite",
            "reads and state stay finite, even for extreme interface vectors",
            _each_step(_finite_values),
        ),
        Property(
            "step_is_pure",
            "step mutates neither the state nor xi, and gives the same outputs for the same inputs",
            _each_step(_purity),
        ),
        Property(
            "gradients_are_finite_at_zero_memory",
            "gradients of the reads and the new state reach xi and are finite at a zero memory",
            _gradients_at_zero_memory,
            cases={"adversaries": ("zero_memory",)},
        ),
        Property(
            "vmap_equals_loop",
            "vmap(step) over the steps of a case equals stepping them one by one",
            _vmap_equals_loop,
            cases={"min_steps": 1},
            prefer_float64=True,
        ),
        Property(
            "broadcast_equals_vmap",
            "step on states with a leading batch axis equals vmap(step) (the Memory protocol's broadcasting)",
            _broadcast_equals_vmap,
            cases={"min_steps": 1},
            prefer_float64=True,
        ),
    ]
    docs = {
        "usage_in_unit_interval": "usage_vector stays in [0, 1]",
        "access_stamps_in_range": "last_access stays in [0, time]",
        "read_weights_are_distributions": "read_weights are non-negative and each head's sum to at most 1",
        "write_weights_are_distributions": "write_weights are non-negative and sum to at most 1 (bounded allocation)",
        "precedence_is_a_distribution": "precedence is non-negative and sums to at most 1",
        "link_matrix_is_valid": "links in [0, 1], a zero diagonal, rows and columns summing to at most 1",
    }
    for name, (needs, _) in STATE_INVARIANTS.items():
        found.append(Property(name, docs[name], _state_invariant(name), needs))
    found += [
        Property(
            "only_write_rows_change",
            "a sparse step changes only memory rows among its write positions, at most R * P + 1",
            _each_step(_sparse_rows),
            ("memory", "write_positions", "read_positions"),
        ),
        Property(
            "compiled_equals_eager",
            "torch.compile(vmap(step)) equals eager vmap(step) (optional: each example compiles, ~30 s)",
            _compiled_equals_eager,
            cases={"min_steps": 1},
            prefer_float64=True,
        ),
    ]
    return {p.name: p for p in found}


#: Every property ``check_memory`` knows, by name (``compiled_equals_eager`` runs only with ``compile=True``).
PROPERTIES: dict[str, Property] = _properties()


class PropertyViolation(AssertionError):
    """A property failed on a drawn case (the message says how)."""


@dataclasses.dataclass(frozen=True)
class PropertyFailure:
    """A property that failed: its ``name``, the ``message`` of the shrunk example, and that ``example``
    (a :class:`MemoryCase`: ``example.memory``, ``example.state`` and ``example.xi`` rebuild it)."""

    name: str
    message: str
    example: MemoryCase

    def __str__(self) -> str:
        example = repr(self.example).replace("\n", "\n  ")  # its steps indented under it
        return f"{self.name}: {self.message}\n  shrunk example: {example}"


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """What :func:`check_memory` found: the properties that ``passed``, the ``failures`` (each with
    its shrunk example) and those ``not_applicable`` (the state lacks their fields)."""

    memory: str
    passed: tuple[str, ...]
    failures: tuple[PropertyFailure, ...]
    not_applicable: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.failures)

    def __getitem__(self, name: str) -> PropertyFailure:
        """The failure of the named property (``KeyError`` if it did not fail)."""
        for failure in self.failures:
            if failure.name == name:
                return failure
        raise KeyError(f"{name!r} did not fail; failed: {self.failed}")

    def __str__(self) -> str:
        lines = [f"check_memory({self.memory}): {len(self.passed)} passed, {len(self.failures)} failed"]
        lines += [f"  FAILED {failure}".replace("\n", "\n  ") for failure in self.failures]
        if self.passed:
            lines.append(f"  passed: {', '.join(self.passed)}")
        if self.not_applicable:
            lines.append(f"  not applicable (no such state fields): {', '.join(self.not_applicable)}")
        return "\n".join(lines)


class MemoryCheckError(AssertionError):
    """Raised by :func:`check_memory` when a property fails; ``report`` holds the :class:`MemoryReport`."""

    def __init__(self, report: MemoryReport) -> None:
        super().__init__(str(report))
        self.report = report


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Draw without the literals hypothesis harvests from the process's own modules.

    Hypothesis (since 6.131) sometimes draws a literal found in the source of a "local" module in
    ``sys.modules`` (any importable file outside site-packages, the stdlib and test folders), and
    the pool's size alone shifts its random stream. So which modules a process happened to import
    changed every later example, derandomized or not: ``import memfn.tasks.train`` before a check
    made it miss a bug it found otherwise. Inside this context the harvested pool is empty (the
    global constants, fixed by the hypothesis version, stay), so the examples depend only on the
    call. Process-wide while it lasts: not for threads drawing other examples concurrently.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a hypothesis before local constants: nothing to turn off
        yield
        return
    harvest = getattr(providers, "_get_local_constants", None)
    if harvest is None:
        yield
        return
    empty = Constants()
    providers.CONSTANTS_CACHE.cache.clear()  # its entries hold the pool of the last draw
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = harvest
        providers.CONSTANTS_CACHE.cache.clear()  # nor may ours outlive the context


def _run(prop: Property, cases: st.SearchStrategy[MemoryCase], settings: hypothesis.settings) -> PropertyFailure | None:
    """Search for a case that breaks ``prop`` and shrink it; the failure of the shrunk case, or ``None``."""
    seen: list[tuple[MemoryCase, str]] = []

    def holds(case: MemoryCase) -> None:
        try:
            message = prop.check(case)
        except Exception as err:  # a step that raises fails the property (and is shrunk like any failure)
            message = f"raised {type(err).__name__}: {err}"
        if message is not None:
            seen.append((case, message))
            raise PropertyViolation(message)

    holds.__name__ = holds.__qualname__ = prop.name  # what hypothesis's own report calls it
    try:
        settings(given(case=cases)(holds))()
    except PropertyViolation:
        pass  # hypothesis re-runs the shrunk example last: it is seen[-1]
    except Flaky:
        case, message = seen[-1]
        return PropertyFailure(prop.name, f"flaky (failed, then passed on the same example): {message}", case)
    return PropertyFailure(prop.name, seen[-1][1], seen[-1][0]) if seen else None


def _first_example(strategy: st.SearchStrategy[Any]) -> Any:
    """One value of ``strategy`` (the simplest: hypothesis tries it first), without shrinking or a database."""
    found = []
    once = hypothesis.settings(max_examples=1, phases=[Phase.generate], database=None, deadline=None)

    def record(value: Any) -> None:
        found.append(value)

    once(given(strategy)(record))()
    return found[0]


def check_memory(
    memory_factory: Memory | Callable[..., Memory],
    *,
    sizes: st.SearchStrategy[dict[str, int]] | None = None,
    dtypes: Sequence[torch.dtype] = DTYPES,
    max_examples: int = 50,
    max_steps: int = 3,
    properties: Sequence[str] | None = None,
    compile: bool = False,
    compile_examples: int = 1,
    settings: hypothesis.settings | None = None,
    raise_on_failure: bool = True,
) -> MemoryReport:
    """Run every applicable property of :data:`PROPERTIES` against a memory; report each failure
    with its shrunk example.

    Args:
        memory_factory: a :class:`~memfn._memory.Memory`, or a function returning one from size
            keyword arguments (``memfn.dnc``, ``memfn.sam``, ``functools.partial(my_memory, ...)``).
        sizes: a strategy of keyword-argument dicts for ``memory_factory`` (default
            :func:`~memfn.testing.sizes_for`: the sizes its signature names, up to 8 cells).
        dtypes: the state dtypes to draw from.
        max_examples: examples per property (each draws sizes, a walk, an adversary and ``xi``).
        max_steps: the longest walk from ``init()`` before the checked step.
        properties: names of the properties to run (default: all but ``compiled_equals_eager``).
        compile: also check ``torch.compile(vmap(step))`` against eager on ``compile_examples``
            examples, without shrinking (a compile takes ~30 s on a CPU).
        settings: hypothesis settings to start from (default: the loaded profile); ``max_examples``,
            ``deadline=None`` and suppressed health checks are set on top.
        raise_on_failure: raise :class:`MemoryCheckError` (an ``AssertionError``, for pytest) if a
            property fails; otherwise just return the report.

    Properties whose state fields the memory lacks (links, usage, sparse positions, ...) are
    reported as not applicable, so any object satisfying the ``Memory`` protocol can be checked.
    """
    factory = as_factory(memory_factory)
    sizes = sizes if sizes is not None else sizes_for(factory)
    names = list(properties) if properties is not None else [n for n in PROPERTIES if n != "compiled_equals_eager"]
    if compile and "compiled_equals_eager" not in names:
        names.append("compiled_equals_eager")
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {list(PROPERTIES)}")
    with _no_local_constants():  # the same report whatever the process imported before
        passed, failures, skipped = _search(
            factory, sizes, names, dtypes, max_examples, max_steps, compile_examples, settings
        )
    report = MemoryReport(describe_factory(factory, {}), tuple(passed), tuple(failures), tuple(skipped))
    if failures and raise_on_failure:
        raise MemoryCheckError(report)
    return report


def _search(
    factory: Callable[..., Memory],
    sizes: st.SearchStrategy[dict[str, int]],
    names: list[str],
    dtypes: Sequence[torch.dtype],
    max_examples: int,
    max_steps: int,
    compile_examples: int,
    settings: hypothesis.settings | None,
) -> tuple[list[str], list[PropertyFailure], list[str]]:
    """The searches of :func:`check_memory`: the names that passed, the failures, the inapplicable names."""
    # Which properties apply is read off the field names of one (the smallest) memory's state.
    fields = tuple(getattr(factory(**_first_example(sizes)).init(dtypes[0]), "_fields", ()))
    base = settings if settings is not None else hypothesis.settings()
    search = hypothesis.settings(
        base,
        max_examples=max_examples,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in base.phases if p != Phase.explain],
    )
    once = hypothesis.settings(search, max_examples=compile_examples, phases=[Phase.generate], database=None)
    passed: list[str] = []
    failures: list[PropertyFailure] = []
    skipped: list[str] = []
    for name in names:
        prop = PROPERTIES[name]
        if not applicable(fields, prop.needs):
            skipped.append(name)
            continue
        drawn = (torch.float64,) if prop.prefer_float64 and torch.float64 in dtypes else tuple(dtypes)
        options = {"sizes": sizes, "dtypes": drawn, "max_steps": max(max_steps, prop.cases.get("min_steps", 0))}
        cases = memory_cases(factory, **options, **prop.cases)
        failure = _run(prop, cases, once if name == "compiled_equals_eager" else search)
        (failures.append(failure) if failure else passed.append(name))
    return passed, failures, skipped
