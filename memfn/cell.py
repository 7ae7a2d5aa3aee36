"""One time step of a memory-augmented network, and the runner that owns the time axis.

The cell (flax's ``(carry, x) -> (carry, y)`` idea, written ``(params, state, x) -> (y, state)``):

    controller input   = [x_t ; r_{t-1}]            (read vectors of the previous step fed back)
    h_t                = clip(controller(input), -clip, clip)
    xi_t               = W_xi h_t + b_xi              (the memory interface)
    r_t, memory_t      = memory.step(memory_{t-1}, xi_t)
    y_t                = W_y [h_t ; r_t] + b_y        (or [h_t ; r_t] itself with no output size)

Any :class:`~memfn.controllers.Controller` and any :class:`~memfn.memory.Memory` plug in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import optree
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from memfn.controllers import Controller, Params
from memfn.memory import Memory, default_dtype
from memfn.validation import positive_int


class CellState(NamedTuple):
    """One example's cell state (a pytree; batch it with :func:`batch_state`).

    Attributes:
        controller: the controller's state (:class:`~memfn.controllers.LSTMState` or
            :class:`~memfn.controllers.RNNState`; a tuple of them, one per layer, for several layers).
        memory: the memory's state (e.g. :class:`~memfn.dense.DNCState`; a tuple, one per layer,
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


def _linear_init(out_f: int, in_f: int, generator, dtype, device) -> tuple[Tensor, Tensor]:
    # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / math.sqrt(in_f)
    w = torch.empty(out_f, in_f, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    b = torch.empty(out_f, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    return w, b


def _as_tuple(x: Any, kind: type) -> tuple[tuple, bool]:
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
            expected, what = i_size + top_reads, f"input_size + memory.read_size = {i_size} + {top_reads}"
        else:
            below = ctrls[l - 1].output_size + layer_mems[l - 1].read_size
            expected, what = below, f"the layer below's hidden + reads = {below}"
        if ctrl.input_size != expected:
            name = "controller" if single_ctrl else f"controller[{l}]"
            raise ValueError(f"{name}.input_size must be {what} = {expected}, got {ctrl.input_size}")
    features = ctrls[-1].output_size + top_reads
    o_size = features if output_size is None else positive_int("output_size", output_size)
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0):
        raise ValueError(f"clip must be a number >= 0 or None, got {clip!r}")
    prefixes = [f"controllers.{l}." for l in range(layers)]

    def init_params(generator: torch.Generator | None = None, dtype=None, device=None) -> Params:
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

    def init_state(dtype=None, device=None) -> CellState:
        dtype = default_dtype(dtype)
        cstates = tuple(c.init_state(dtype, device) for c in ctrls)
        mstates = tuple(m.init(dtype, device) for m in mems)
        return CellState(
            controller=cstates[0] if single_ctrl else cstates,
            memory=mstates[0] if shared else mstates,
            read_vectors=torch.zeros(top_reads, dtype=dtype, device=device),
        )

    def step(
        params: Params,
        state: CellState,
        x: Tensor,
        training: bool = False,
        pass_through_memory: bool = True,
        trace: list | None = None,
    ) -> tuple[Tensor, CellState]:
        cstates = (state.controller,) if single_ctrl else state.controller
        mstates = [state.memory] if shared else list(state.memory)
        new_cstates = []
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
                reads, mstates[m] = mem.step(mstates[m], xi)
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

    return Cell(init_params, init_state, step, i_size, o_size)


def batch_state(state: Any, batch_size: int) -> Any:
    """Repeat one example's state pytree along a new leading batch axis of ``batch_size``.

    Examples:
        >>> state = memfn.batch_state(memfn.dnc(nr_cells=16, cell_size=8, read_heads=2).init(), 4)
        >>> state.memory.shape, state.link_matrix.shape
        (torch.Size([4, 16, 8]), torch.Size([4, 1, 16, 16]))
    """
    return optree.tree_map(lambda t: t.unsqueeze(0).expand(batch_size, *t.shape).clone(), state)


def batched_step(cell: Cell, *, compile: bool = False, use_vmap: bool = True, **compile_kwargs: Any) -> Callable:
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

    def fn(params: Params, state: CellState, x: Tensor, **step_kwargs: Any):
        if not use_vmap:
            return cell.step(params, state, x, **step_kwargs)
        return torch.func.vmap(lambda s, xx: cell.step(params, s, xx, **step_kwargs), randomness="different")(state, x)

    return torch.compile(fn, **compile_kwargs) if compile else fn


def _where(mask: Tensor, new: Any, old: Any) -> Any:
    """Per example: ``new`` where ``mask`` ``[B]`` is true, ``old`` elsewhere (for padded steps)."""

    def pick(n: Tensor, o: Tensor) -> Tensor:
        return torch.where(mask.reshape(-1, *([1] * (n.ndim - 1))), n, o)

    return optree.tree_map(pick, new, old)


def run(
    step: Callable,
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
    if not checkpoint_every or not torch.is_grad_enabled():
        return _run_segment(step, params, state, inputs, lengths, 0, step_kwargs)
    k = positive_int("checkpoint_every", checkpoint_every)
    outputs = []
    for start in range(0, inputs.shape[0], k):
        ys, state = torch.utils.checkpoint.checkpoint(
            _run_segment, step, params, state, inputs[start : start + k], lengths, start, step_kwargs,
            use_reentrant=False,
        )  # fmt: skip
        outputs.append(ys)
    return torch.cat(outputs), state


def _run_segment(step, params, state, inputs, lengths, offset: int, step_kwargs: dict) -> tuple[Tensor, Any]:
    outputs = []
    for t in range(inputs.shape[0]):
        y, new_state = step(params, state, inputs[t], **step_kwargs)
        if lengths is not None:
            alive = lengths.to(inputs.device) > offset + t
            new_state = _where(alive, new_state, state)
            y = y * alive.unsqueeze(-1).to(y.dtype)
        state = new_state
        outputs.append(y)
    return torch.stack(outputs), state
