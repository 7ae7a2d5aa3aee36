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
from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch
import torch.nn.functional as F
from torch import Tensor

from memfn.controllers import Controller, Params
from memfn.memory import Memory, default_dtype
from memfn.validation import positive_int

CONTROLLER_PREFIX = "controller."


class CellState(NamedTuple):
    controller: Any  # the controller's state NamedTuple
    memory: Any  # the memory's state NamedTuple
    read_vectors: Tensor  # [R * W], the reads of the previous step


class Cell(NamedTuple):
    """A cell: ``init_params``, ``init_state`` and the pure one-step ``step``.

    ``step(params, state, x, training=False, pass_through_memory=True) -> (y, new_state)`` with
    ``x`` ``[input_size]`` and ``y`` ``[output_size]``; broadcasts over leading batch axes.
    ``pass_through_memory=False`` bypasses the memory: its state is kept and the reads are zero.
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


def memory_cell(
    controller: Controller,
    memory: Memory,
    input_size: int,
    output_size: int | None = None,
    clip: float = 20.0,
) -> Cell:
    """Compose ``controller`` and ``memory`` into one time step.

    ``controller.input_size`` must be ``input_size + memory.read_size`` (the inputs and the fed-back
    reads). ``output_size=None`` returns ``[h_t ; r_t]`` unprojected (for stacking cells).
    ``clip`` bounds the controller output (``0`` or ``None`` disables it).
    """
    i_size = positive_int("input_size", input_size)
    expected = i_size + memory.read_size
    if controller.input_size != expected:
        raise ValueError(
            f"controller.input_size must be input_size + memory.read_size = {i_size} + "
            f"{memory.read_size} = {expected}, got {controller.input_size}"
        )
    features = controller.output_size + memory.read_size
    o_size = features if output_size is None else positive_int("output_size", output_size)
    if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
        raise ValueError(f"clip must be a number >= 0 or None, got {clip!r}")

    def init_params(generator: torch.Generator | None = None, dtype=None, device=None) -> Params:
        dtype = default_dtype(dtype)
        params = {CONTROLLER_PREFIX + k: v for k, v in controller.init_params(generator, dtype, device).items()}
        w, b = _linear_init(memory.interface_size, controller.output_size, generator, dtype, device)
        params.update({"interface.weight": w, "interface.bias": b})
        if output_size is not None:
            w, b = _linear_init(o_size, features, generator, dtype, device)
            params.update({"output.weight": w, "output.bias": b})
        return params

    def init_state(dtype=None, device=None) -> CellState:
        dtype = default_dtype(dtype)
        return CellState(
            controller=controller.init_state(dtype, device),
            memory=memory.init(dtype, device),
            read_vectors=torch.zeros(memory.read_size, dtype=dtype, device=device),
        )

    n_prefix = len(CONTROLLER_PREFIX)

    def step(
        params: Params, state: CellState, x: Tensor, training: bool = False, pass_through_memory: bool = True
    ) -> tuple[Tensor, CellState]:
        cparams = {k[n_prefix:]: v for k, v in params.items() if k.startswith(CONTROLLER_PREFIX)}
        h, cstate = controller.step(cparams, state.controller, torch.cat([x, state.read_vectors], -1), training)
        if clip:
            h = torch.clamp(h, -clip, clip)
        if pass_through_memory:
            xi = F.linear(h, params["interface.weight"], params["interface.bias"])
            reads, mstate = memory.step(state.memory, xi)
            reads = reads.flatten(-2)
        else:
            mstate, reads = state.memory, torch.zeros_like(state.read_vectors)
        features = torch.cat([h, reads], -1)
        y = features if output_size is None else F.linear(features, params["output.weight"], params["output.bias"])
        return y, CellState(cstate, mstate, reads)

    return Cell(init_params, init_state, step, i_size, o_size)


def batch_state(state: Any, batch_size: int) -> Any:
    """Repeat one example's state pytree along a new leading batch axis of ``batch_size``."""
    return optree.tree_map(lambda t: t.unsqueeze(0).expand(batch_size, *t.shape).clone(), state)


def batched_step(cell: Cell, *, compile: bool = False, use_vmap: bool = True, **compile_kwargs: Any) -> Callable:
    """``(params, state[B], x[B], ...) -> (y[B], state[B])``: the step batched over examples.

    ``use_vmap=True`` batches with ``torch.func.vmap`` (parameters shared, ``randomness="different"``
    so dropout differs per example); ``use_vmap=False`` relies on the cell broadcasting over the
    leading axis, which skips ``vmap``'s eager overhead and gives the same numbers. ``compile=True``
    wraps the result in ``torch.compile`` (extra keyword arguments go to it): compile the *step*,
    not the time loop, so one compiled graph serves every sequence length.
    """

    def fn(params: Params, state: CellState, x: Tensor, training: bool = False, pass_through_memory: bool = True):
        def one(s, xx):
            return cell.step(params, s, xx, training, pass_through_memory)

        if use_vmap:
            return torch.func.vmap(one, randomness="different")(state, x)
        return one(state, x)

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
    **step_kwargs: Any,
) -> tuple[Tensor, Any]:
    """Run a batched step over time: ``inputs`` ``[T, B, I]`` -> ``(outputs [T, B, O], final state)``.

    ``step`` is what :func:`batched_step` returns. With ``lengths`` ``[B]``, steps at or past an
    example's length leave its state unchanged and output zeros (packed-sequence semantics).
    """
    outputs = []
    for t in range(inputs.shape[0]):
        y, new_state = step(params, state, inputs[t], **step_kwargs)
        if lengths is not None:
            alive = lengths.to(inputs.device) > t
            new_state = _where(alive, new_state, state)
            y = y * alive.unsqueeze(-1).to(y.dtype)
        state = new_state
        outputs.append(y)
    return torch.stack(outputs), state
