"""One time step of a memory-augmented network, and the runner that owns the time axis.

The cell (flax's ``(carry, x) -> (carry, y)`` idea, written ``(params, state, x) -> (y, state)``):

    controller input   = [x_t ; r_{t-1}]            (read vectors of the previous step fed back)
    h_t                = clip(controller(input), -clip, clip)
    xi_t               = W_xi h_t + b_xi              (the memory interface)
    r_t, memory_t      = memory.step(memory_{t-1}, xi_t)
    y_t                = W_y [h_t ; r_t] + b_y        (or [h_t ; r_t] itself with no output size)

Any :class:`~memfn.controllers.Controller` and any :class:`~memfn._memory.Memory` plug in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import optree
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from memfn._memory import Memory, default_dtype, unchecked
from memfn._resources import batched
from memfn._torch import in_functorch_transform
from memfn._validation import check_params, check_state, floating_dtype_and_device, positive_int
from memfn.controllers import Controller, Params


class CellState(NamedTuple):
    """One example's cell state (a pytree; batch it with :func:`batch_state`).

    Attributes:
        controller: the controller's state (:class:`~memfn.controllers.LSTMState` or
            :class:`~memfn.controllers.RNNState`; a tuple of them, one per layer, for several layers).
        memory: the memory's state (e.g. :class:`~memfn._dnc.DNCState`; a tuple, one per layer,
            when layers do not share a memory).
        read_vectors: ``[R * W]``, the previous step's reads, fed to the controller at this step.

    Examples:
        >>> mem = memfn.dnc(nr_cells=8, cell_size=4, read_heads=2)
        >>> cell = memfn.memory_cell(memfn.lstm(3 + mem.read_size, 16), mem, input_size=3)
        >>> state = cell.init_state()
        >>> type(state.controller).__name__, type(state.memory).__name__, state.read_vectors.shape
        ('LSTMState', 'DNCState', torch.Size([8]))
    """

    controller: Any  # the controller's state NamedTuple
    memory: Any  # the memory's state NamedTuple
    read_vectors: Tensor  # [R * W], the reads of the previous step


class Cell(NamedTuple):
    """A cell: ``init_params``, ``init_state`` and the pure one-step ``step``.

    ``step(params, state, x, training=False, pass_through_memory=True, trace=None) -> (y, new_state)``
    with ``x`` ``[input_size]`` and ``y`` ``[output_size]``; broadcasts over leading batch axes.
    ``pass_through_memory=False`` bypasses the memory: its state is kept and the reads are zero.
    ``trace``, a list, receives the memory state after each layer (for debug views; eager only).

    Examples:
        >>> mem = memfn.dnc(nr_cells=8, cell_size=4, read_heads=2)
        >>> cell = memfn.memory_cell(memfn.lstm(3 + mem.read_size, 16), mem, input_size=3, output_size=5)
        >>> y, state = cell.step(cell.init_params(), cell.init_state(), torch.randn(3))
        >>> y.shape
        torch.Size([5])
    """

    init_params: Callable[..., Params]
    init_state: Callable[..., CellState]
    step: Callable[..., tuple[Tensor, CellState]]
    input_size: int
    output_size: int
    #: ``check(params, state, batch_shape=None)``: raise unless both fit this cell (checked once at
    #: a boundary: ``step`` itself, :func:`run`, the shells; never inside a compiled graph).
    check: Callable[..., None] | None = None


T = TypeVar("T")


def _linear_init(
    out_f: int, in_f: int, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device | str | None
) -> tuple[Tensor, Tensor]:
    # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / math.sqrt(in_f)
    w = torch.empty(out_f, in_f, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    b = torch.empty(out_f, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    return w, b


def _as_tuple(x: Any, kind: type[T]) -> tuple[tuple[T, ...], bool]:
    """``(items, was_single)``: accept one ``kind`` or a sequence of them."""
    if isinstance(x, kind):
        return (x,), True
    items = tuple(x)
    if not items or not all(isinstance(i, kind) for i in items):
        raise ValueError(f"expected a {kind.__name__} or a non-empty sequence of them, got {x!r}")
    return items, False


def memory_cell(
    controller: Controller | Sequence[Controller],
    memory: Memory | Sequence[Memory],
    input_size: int,
    output_size: int | None = None,
    clip: float | None = 20.0,
) -> Cell:
    """Compose controller(s) and memory (memories) into one time step.

    One controller: ``controller.input_size`` must be ``input_size + memory.read_size`` (the inputs
    and the fed-back reads). A sequence of controllers stacks layers (pytorch-dnc's
    ``num_layers``): layer ``l > 0`` reads ``[h^{l-1}_t ; r^{l-1}_t]`` from the layer below, and the
    top layer's reads are the ones fed back to layer 0 at the next step. One ``memory`` is shared
    by all layers (each layer steps it in turn); a sequence gives each layer its own.

    ``output_size=None`` returns ``[h_t ; r_t]`` of the top layer unprojected. ``clip`` bounds the
    controller outputs (``0`` or ``None`` disables it). Parameters are named
    ``controllers.{l}.<nn.LSTM name>``, ``interfaces.{l}.weight|bias`` and ``output.weight|bias``.
    The state's ``controller`` (``memory``) is one state, or a tuple per layer when a sequence of
    controllers (memories) was given.

    Examples:
        >>> mem = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2)
        >>> ctrls = [memfn.lstm(6 + mem.read_size, 32), memfn.lstm(32 + mem.read_size, 32)]  # two layers
        >>> cell = memfn.memory_cell(ctrls, mem, input_size=6, output_size=6)  # one memory, shared
        >>> sorted({name.rsplit(".", 1)[0] for name in cell.init_params()})
        ['controllers.0', 'controllers.1', 'interfaces.0', 'interfaces.1', 'output']
    """
    ctrls, single_ctrl = _as_tuple(controller, Controller)
    mems, shared = _as_tuple(memory, Memory)
    layers = len(ctrls)
    if not shared and len(mems) != layers:
        raise ValueError(f"memory must be one Memory (shared) or one per layer ({layers}), got {len(mems)}")
    layer_mems = mems * layers if shared else mems
    i_size = positive_int("input_size", input_size)
    top_reads = layer_mems[-1].read_size
    for l, ctrl in enumerate(ctrls):
        if l == 0:
            needed, what = i_size + top_reads, f"input_size + memory.read_size = {i_size} + {top_reads}"
        else:
            below = ctrls[l - 1].output_size + layer_mems[l - 1].read_size
            needed, what = below, f"the layer below's hidden + reads = {below}"
        if ctrl.input_size != needed:
            name = "controller" if single_ctrl else f"controller[{l}]"
            raise ValueError(f"{name}.input_size must be {what} = {needed}, got {ctrl.input_size}")
    features = ctrls[-1].output_size + top_reads
    o_size = features if output_size is None else positive_int("output_size", output_size)
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, (int, float)) or math.isnan(clip) or clip < 0
    ):  # NaN would clamp every controller output to NaN
        raise ValueError(f"clip must be a number >= 0 (0: no clipping) or None, got {clip!r}")
    prefixes = [f"controllers.{l}." for l in range(layers)]

    def init_params(
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Params:
        dtype = default_dtype(dtype)
        params: Params = {}
        for l, (ctrl, mem) in enumerate(zip(ctrls, layer_mems)):
            params.update({prefixes[l] + k: v for k, v in ctrl.init_params(generator, dtype, device).items()})
            w, b = _linear_init(mem.interface_size, ctrl.output_size, generator, dtype, device)
            params.update({f"interfaces.{l}.weight": w, f"interfaces.{l}.bias": b})
        if output_size is not None:
            w, b = _linear_init(o_size, features, generator, dtype, device)
            params.update({"output.weight": w, "output.bias": b})
        return params

    def init_state(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> CellState:
        dtype = default_dtype(dtype)
        cstates = tuple(c.init_state(dtype, device) for c in ctrls)
        mstates = tuple(m.init(dtype, device) for m in mems)
        return CellState(
            controller=cstates[0] if single_ctrl else cstates,
            memory=mstates[0] if shared else mstates,
            read_vectors=torch.zeros(top_reads, dtype=dtype, device=device),
        )

    # One example's shapes and dtypes, on the meta device (no memory, no random numbers drawn), built
    # here rather than at the first check, which may run under vmap (no random ops allowed there).
    expected: dict[str, Any] = {
        "params": init_params(device="meta"),
        "controller": tuple(c.init_state(device="meta") for c in ctrls),
        "reads": torch.empty(top_reads, device="meta"),
    }

    def check(params: Params, state: CellState, batch_shape: tuple[int, ...] | None = None) -> None:
        if torch.compiler.is_compiling():
            return
        if not isinstance(state, CellState):
            raise TypeError(f"state must be a CellState (controller, memory, read_vectors), got {type(state).__name__}")
        reads = state.read_vectors
        if not isinstance(reads, Tensor) or reads.ndim < 1:
            raise TypeError(f"state.read_vectors must be a tensor [..., {top_reads}], got {type(reads).__name__}")
        lead = tuple(reads.shape[:-1]) if batch_shape is None else tuple(batch_shape)
        check_state(reads, expected["reads"], "state.read_vectors", lead)
        ectrl = expected["controller"]
        check_state(state.controller, ectrl[0] if single_ctrl else ectrl, "state.controller", lead)
        mstates = (state.memory,) if shared else state.memory
        if not shared and (not isinstance(mstates, (tuple, list)) or len(mstates) != len(mems)):
            raise TypeError(f"state.memory must be a tuple of {len(mems)} memory states (one per layer)")
        parts: list[tuple[str, Any]] = [("state.controller", state.controller)]
        for i, (mem, mstate) in enumerate(zip(mems, mstates)):
            if mem.check is not None:  # (the fast path's engine memories check their own state)
                name = "state.memory" if shared else f"state.memory[{i}]"
                mem.check(mstate, lead, name)
                parts.append((name, mstate))
        for name, part in parts:  # one floating dtype and one device across the parts
            dtype, device = floating_dtype_and_device(part)
            if dtype is not None and dtype != reads.dtype:
                raise TypeError(f"{name} has dtype {dtype} but state.read_vectors has {reads.dtype}: convert one")
            if device is not None and device != reads.device:
                raise ValueError(f"{name} is on {device} but state.read_vectors is on {reads.device}: move one")
        check_params(params, expected["params"], reads.dtype, reads.device)

    def step(
        params: Params,
        state: CellState,
        x: Tensor,
        training: bool = False,
        pass_through_memory: bool = True,
        trace: list[Any] | None = None,
    ) -> tuple[Tensor, CellState]:
        cstates = (state.controller,) if single_ctrl else state.controller
        mstates = [state.memory] if shared else list(state.memory)
        new_cstates: list[Any] = []
        inp = torch.cat([x, state.read_vectors], -1)
        for l, (ctrl, mem) in enumerate(zip(ctrls, layer_mems)):
            n = len(prefixes[l])
            cparams = {k[n:]: v for k, v in params.items() if k.startswith(prefixes[l])}
            h, cstate = ctrl.step(cparams, cstates[l], inp, training)
            new_cstates.append(cstate)
            if clip:
                h = torch.clamp(h, -clip, clip)
            m = 0 if shared else l
            if pass_through_memory:
                xi = F.linear(h, params[f"interfaces.{l}.weight"], params[f"interfaces.{l}.bias"])
                reads, mstates[m] = unchecked(mem.step)(mstates[m], xi)
                reads = reads.flatten(-2)
            else:
                reads = h.new_zeros(*h.shape[:-1], mem.read_size)
            if trace is not None:  # eager debugging only: the memory state after each layer
                trace.append(mstates[m])
            inp = torch.cat([h, reads], -1)
        y = inp if output_size is None else F.linear(inp, params["output.weight"], params["output.bias"])
        new_state = CellState(
            controller=new_cstates[0] if single_ctrl else tuple(new_cstates),
            memory=mstates[0] if shared else tuple(mstates),
            read_vectors=reads,
        )
        return y, new_state

    def checked_step(params: Params, state: CellState, *args: Any, **kwargs: Any) -> tuple[Tensor, CellState]:
        """The cell's ``step`` after checking ``params`` and ``state`` (see :class:`Cell`)."""
        check(params, state)
        return step(params, state, *args, **kwargs)

    checked_step.unchecked = step  # type: ignore[attr-defined]
    checked_step.__wrapped__ = step  # type: ignore[attr-defined]  # inspect.signature shows step's
    return Cell(init_params, init_state, checked_step, i_size, o_size, check)


def batch_state(state: Any, batch_size: int) -> Any:
    """Repeat one example's state pytree along a new leading batch axis of ``batch_size`` (>= 0).

    Examples:
        >>> state = memfn.batch_state(memfn.dnc(nr_cells=16, cell_size=8, read_heads=2).init(), 4)
        >>> state.memory.shape, state.link_matrix.shape
        (torch.Size([4, 16, 8]), torch.Size([4, 1, 16, 16]))
    """
    batch_size = positive_int("batch_size", batch_size, minimum=0)
    return optree.tree_map(lambda t: batched(t, batch_size), state)


def batched_step(
    cell: Cell, *, compile: bool = False, use_vmap: bool = True, **compile_kwargs: Any
) -> Callable[..., tuple[Tensor, Any]]:
    """``(params, state[B], x[B], **step_kwargs) -> (y[B], state[B])``: the step batched over examples.

    ``use_vmap=True`` batches with ``torch.func.vmap`` (parameters shared, ``randomness="different"``
    so dropout differs per example); ``use_vmap=False`` relies on the cell broadcasting over the
    leading axis, which skips ``vmap``'s eager overhead and gives the same numbers. ``compile=True``
    wraps the result in ``torch.compile`` (extra keyword arguments go to it): compile the *step*,
    not the time loop, so one compiled graph serves every sequence length.

    Examples:
        >>> mem = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2)
        >>> cell = memfn.memory_cell(memfn.lstm(6 + mem.read_size, 32), mem, input_size=6, output_size=6)
        >>> step = memfn.batched_step(cell)  # compile=True for the compiled step
        >>> y, state = step(cell.init_params(), memfn.batch_state(cell.init_state(), 4), torch.randn(4, 6))
        >>> y.shape
        torch.Size([4, 6])
    """

    one_step = unchecked(cell.step)  # checked once by run(), not every step

    def fn(params: Params, state: CellState, x: Tensor, **step_kwargs: Any) -> tuple[Tensor, CellState]:
        if not use_vmap:
            return one_step(params, state, x, **step_kwargs)
        return torch.func.vmap(lambda s, xx: one_step(params, s, xx, **step_kwargs), randomness="different")(state, x)

    batched = torch.compile(fn, **compile_kwargs) if compile else fn
    batched.cell = cell  # type: ignore[attr-defined]  # for run()'s check at the boundary
    batched.compiled = compile  # type: ignore[attr-defined]  # for run()'s first state
    return batched


def _compile_ready(state: Any) -> Any:
    """``state`` with its floating leaves requiring grad, when a compiled step will differentiate it.

    Every state after the first carries autograd history; a fresh (or detached) first state would
    not, and the compiled step guards on ``requires_grad``: it would compile a second graph, forward
    and backward, for step 0 alone. (Integer leaves, positions and stamps, cannot require grad;
    inside ``torch.func`` transforms ``requires_grad_`` is not allowed, nor needed.)"""
    if not torch.is_grad_enabled() or in_functorch_transform():
        return state
    return optree.tree_map(
        lambda t: t if t.requires_grad or not t.is_floating_point() else t.detach().requires_grad_(), state
    )


def _where(mask: Tensor, new: Any, old: Any) -> Any:
    """Per example: ``new`` where ``mask`` ``[B]`` is true, ``old`` elsewhere (for padded steps)."""

    def pick(n: Tensor, o: Tensor) -> Tensor:
        return torch.where(mask.reshape(-1, *([1] * (n.ndim - 1))), n, o)

    return optree.tree_map(pick, new, old)


def run(
    step: Callable[..., tuple[Tensor, Any]],
    params: Params,
    state: Any,
    inputs: Tensor,
    lengths: Tensor | None = None,
    checkpoint_every: int | None = None,
    **step_kwargs: Any,
) -> tuple[Tensor, Any]:
    """Run a batched step over time: ``inputs`` ``[T, B, I]`` -> ``(outputs [T, B, O], final state)``.

    ``step`` is what :func:`batched_step` returns. With ``lengths`` ``[B]``, steps at or past an
    example's length leave its state unchanged and output zeros (packed-sequence semantics).

    ``checkpoint_every=k`` trades compute for memory when gradients are on: every ``k`` steps form
    a segment whose intermediate states are recomputed in backward instead of kept, so backward
    keeps about ``T / k + k`` states instead of ``T`` (``k ~ sqrt(T)`` is the usual choice).

    Examples:
        >>> mem = memfn.dnc(nr_cells=16, cell_size=8, read_heads=2)
        >>> cell = memfn.memory_cell(memfn.lstm(6 + mem.read_size, 32), mem, input_size=6, output_size=6)
        >>> state = memfn.batch_state(cell.init_state(), 4)
        >>> ys, state = memfn.run(memfn.batched_step(cell), cell.init_params(), state, torch.randn(10, 4, 6),
        ...                       lengths=torch.tensor([10, 7, 3, 1]))
        >>> ys.shape, ys[5:, 2].abs().sum()  # example 2 stops after 3 steps
        (torch.Size([10, 4, 6]), tensor(0.))
    """
    cell = getattr(step, "cell", None)
    check_inputs(inputs, cell, lengths)
    if cell is not None and cell.check is not None:
        cell.check(params, state, tuple(inputs.shape[1:2]))
    if inputs.shape[0] == 0:  # no steps: empty outputs and the state as given (as nn.LSTM)
        if cell is None:
            raise ValueError("inputs has no time steps (T = 0); run needs a step from batched_step to know its output")
        return inputs.new_zeros(0, inputs.shape[1], cell.output_size), state
    if getattr(step, "compiled", False):
        state = _compile_ready(state)
    if not checkpoint_every or not torch.is_grad_enabled():
        return _run_segment(step, params, state, inputs, lengths, 0, step_kwargs)
    k = positive_int("checkpoint_every", checkpoint_every)
    outputs: list[Tensor] = []
    for start in range(0, inputs.shape[0], k):
        ys, state = torch.utils.checkpoint.checkpoint(
            _run_segment, step, params, state, inputs[start : start + k], lengths, start, step_kwargs,
            use_reentrant=False,
        )  # fmt: skip
        outputs.append(ys)
    return torch.cat(outputs), state


def check_inputs(inputs: Any, cell: Cell | None, lengths: Tensor | None = None) -> None:
    """Raise unless ``inputs`` is a floating ``[T, B, input_size]`` tensor (and ``lengths`` ``[B]``)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor [T, B, input_size], got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must have a floating dtype, got {inputs.dtype}")
    size = "input_size" if cell is None else f"input_size={cell.input_size}"
    if inputs.ndim != 3 or (cell is not None and inputs.shape[-1] != cell.input_size):
        raise ValueError(f"inputs must have shape [T, B, {size}], got {tuple(inputs.shape)}")
    if lengths is not None and (not isinstance(lengths, Tensor) or tuple(lengths.shape) != tuple(inputs.shape[1:2])):
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must be a tensor [B] = [{inputs.shape[1]}], got {shape}")


def _run_segment(
    step: Callable[..., tuple[Tensor, Any]],
    params: Params,
    state: Any,
    inputs: Tensor,
    lengths: Tensor | None,
    offset: int,
    step_kwargs: dict[str, Any],
) -> tuple[Tensor, Any]:
    outputs: list[Tensor] = []
    for t in range(inputs.shape[0]):
        y, new_state = step(params, state, inputs[t], **step_kwargs)
        if lengths is not None:
            alive = lengths.to(inputs.device) > offset + t
            new_state = _where(alive, new_state, state)
            y = y * alive.unsqueeze(-1).to(y.dtype)
        state = new_state
        outputs.append(y)
    return torch.stack(outputs), state


__all__ = [
    "Cell",
    "CellState",
    "batch_state",
    "batched_step",
    "check_inputs",
    "memory_cell",
    "run",
]
