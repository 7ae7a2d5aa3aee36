"""Pure recurrent controllers (LSTM, GRU, vanilla RNN) written on ``F.linear``.

``nn.LSTMCell`` and friends have no ``vmap`` batching rule (pytorch#105982), so the cells are
written out here. Parameter names and layouts are ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``'s
(``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ...; gates stacked in torch's
order), so ``controller.step(dict(torch_module.named_parameters()), ...)`` reproduces the torch
module and weights move between the two freely.

Shapes for one example: input ``[I]``, state ``h`` (and ``c``) ``[num_layers, H]``, output ``[H]``
(the top layer). Everything broadcasts over leading batch axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from memfn._memory import default_dtype
from memfn._validation import one_of, positive_int, probability

Params = dict[str, Tensor]

#: Initialisation schemes of :func:`controller`'s parameters.
INITS = ("torch", "memoryless")
#: Forget-gate (LSTM) and update-gate (GRU) bias of the ``memoryless`` scheme: the gate starts at
#: sigmoid(-3) ~ 0.05, so the cell keeps about 5 % of its state per step.
MEMORYLESS_GATE_BIAS = -3.0


class LSTMState(NamedTuple):
    """State of the LSTM controller: hidden ``h`` and cell ``c``, each ``[num_layers, H]``.

    Examples:
        >>> memfn.lstm(input_size=4, hidden_size=8, num_layers=2).init_state().c.shape
        torch.Size([2, 8])
    """

    h: Tensor  # [num_layers, H]
    c: Tensor  # [num_layers, H]


class RNNState(NamedTuple):
    """State of the GRU and vanilla RNN controllers: hidden ``h`` ``[num_layers, H]``.

    Examples:
        >>> memfn.gru(input_size=4, hidden_size=8).init_state()
        RNNState(h=tensor([[0., 0., 0., 0., 0., 0., 0., 0.]]))
    """

    h: Tensor  # [num_layers, H]


class Controller(NamedTuple):
    """A controller: pure functions over explicit parameters and state.

    - ``init_params(generator=None, dtype=None, device=None) -> Params``: with ``init='torch'``
      torch's default, ``U(-1/sqrt(H), 1/sqrt(H))``; with ``init='memoryless'`` the same, then the
      recurrent weights zero and the LSTM forget (GRU update) gate biased shut (see :func:`controller`).
    - ``init_state(dtype=None, device=None) -> state``: zeros (deterministic).
    - ``step(params, state, x, training=False) -> (output [H], new_state)``; with ``training`` and
      ``dropout > 0`` it drops out between layers, as ``nn.LSTM`` does (needs
      ``vmap(..., randomness="different")`` when vmapped).

    Examples:
        >>> ctrl = memfn.lstm(input_size=4, hidden_size=8)
        >>> params, state = ctrl.init_params(), ctrl.init_state()
        >>> sorted(params)  # nn.LSTM's names
        ['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
        >>> out, state = ctrl.step(params, state, torch.randn(4))
        >>> out.shape, state.h.shape
        (torch.Size([8]), torch.Size([1, 8]))
    """

    init_params: Callable[..., Params]
    init_state: Callable[..., Any]
    step: Callable[..., tuple[Tensor, Any]]
    input_size: int
    output_size: int
    num_layers: int


def _lstm_layer(p: Params, k: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    gates = F.linear(x, p[f"weight_ih_l{k}"], p.get(f"bias_ih_l{k}")) + F.linear(
        h, p[f"weight_hh_l{k}"], p.get(f"bias_hh_l{k}")
    )
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_layer(p: Params, k: int, x: Tensor, h: Tensor) -> Tensor:
    gi = F.linear(x, p[f"weight_ih_l{k}"], p.get(f"bias_ih_l{k}"))
    gh = F.linear(h, p[f"weight_hh_l{k}"], p.get(f"bias_hh_l{k}"))
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def _make_memoryless(params: Params, k: int, h_size: int, forget_gate: int | None) -> None:
    """Layer ``k`` starts without memory of its own: no recurrent weights, a cell that forgets.

    A controller that can hold a short sequence itself learns to, and then uses the external
    memory as a one-step scratch cell that does not generalise to longer sequences. Starting
    memoryless, storing in the memory is the only way to recall, so the network learns to write
    and to follow the temporal links first. Gradients still reach these weights (``h_{t-1}`` is
    not zero), so the controller grows what recurrence the task needs. Without biases
    (``bias=False``) only the recurrent weights are zeroed: the gate then starts near sigmoid(0),
    keeping about half of the cell per step.
    """
    params[f"weight_hh_l{k}"].zero_()
    if forget_gate is not None and f"bias_ih_l{k}" in params:
        gate = slice(forget_gate * h_size, (forget_gate + 1) * h_size)
        params[f"bias_ih_l{k}"][gate] = MEMORYLESS_GATE_BIAS
        params[f"bias_hh_l{k}"][gate] = 0.0


def _make(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bias: bool,
    dropout: float,
    nonlinearity: str = "tanh",
    init: str = "torch",
) -> Controller:
    i_size = positive_int("input_size", input_size)
    h_size = positive_int("hidden_size", hidden_size)
    layers = positive_int("num_layers", num_layers)
    p_drop = probability("dropout", dropout)
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    act = {"tanh": torch.tanh, "relu": torch.relu}[one_of("nonlinearity", nonlinearity, ("tanh", "relu"))]
    memoryless = one_of("init", init, INITS) == "memoryless"
    # The gate whose bias makes the cell forget: LSTM forget gate (i, f, g, o), GRU update gate (r, z, n).
    forget_gate = {"lstm": 1, "gru": 1, "rnn": None}[kind]

    def init_params(
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Params:
        bound = 1.0 / math.sqrt(h_size)
        params: Params = {}
        for k in range(layers):
            shapes: dict[str, tuple[int, ...]] = {
                f"weight_ih_l{k}": (gates * h_size, i_size if k == 0 else h_size),
                f"weight_hh_l{k}": (gates * h_size, h_size),
            }
            if bias:
                shapes[f"bias_ih_l{k}"] = (gates * h_size,)
                shapes[f"bias_hh_l{k}"] = (gates * h_size,)
            for name, shape in shapes.items():
                t = torch.empty(shape, dtype=default_dtype(dtype), device=device)
                params[name] = t.uniform_(-bound, bound, generator=generator)
            if memoryless:
                _make_memoryless(params, k, h_size, forget_gate)
        return params

    def init_state(dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> LSTMState | RNNState:
        h = torch.zeros(layers, h_size, dtype=default_dtype(dtype), device=device)
        return LSTMState(h, torch.zeros_like(h)) if kind == "lstm" else RNNState(h)

    def step(
        params: Params, state: LSTMState | RNNState, x: Tensor, training: bool = False
    ) -> tuple[Tensor, LSTMState | RNNState]:
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        inp = x
        for k in range(layers):
            if k > 0 and training and p_drop > 0:
                inp = F.dropout(inp, p_drop, training=True)
            h = state.h[..., k, :]
            if kind == "lstm":
                h, c = _lstm_layer(params, k, inp, h, cast(LSTMState, state).c[..., k, :])
                cs.append(c)
            elif kind == "gru":
                h = _gru_layer(params, k, inp, h)
            else:
                h = act(
                    F.linear(inp, params[f"weight_ih_l{k}"], params.get(f"bias_ih_l{k}"))
                    + F.linear(h, params[f"weight_hh_l{k}"], params.get(f"bias_hh_l{k}"))
                )
            hs.append(h)
            inp = h
        h_all = torch.stack(hs, dim=-2)
        new_state = LSTMState(h_all, torch.stack(cs, dim=-2)) if kind == "lstm" else RNNState(h_all)
        return inp, new_state

    return Controller(init_params, init_state, step, i_size, h_size, layers)


def lstm(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    dropout: float = 0.0,
    init: str = "torch",
) -> Controller:
    """A multi-layer LSTM controller with ``nn.LSTM``'s parameters (gate order i, f, g, o); ``init`` as
    :func:`controller`.

    Examples:
        >>> ctrl = memfn.lstm(input_size=6, hidden_size=16, num_layers=2)
        >>> lstm = torch.nn.LSTM(6, 16, num_layers=2)  # the same parameters, the same numbers
        >>> x = torch.randn(6)
        >>> out, state = ctrl.step(dict(lstm.named_parameters()), ctrl.init_state(), x)
        >>> torch.allclose(out, lstm(x[None, None])[0][0, 0], atol=1e-6)
        True
    """
    return _make("lstm", input_size, hidden_size, num_layers, bias, dropout, init=init)


def gru(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    dropout: float = 0.0,
    init: str = "torch",
) -> Controller:
    """A multi-layer GRU controller with ``nn.GRU``'s parameters (gate order r, z, n); ``init`` as
    :func:`controller`.

    Examples:
        >>> ctrl = memfn.gru(input_size=6, hidden_size=16)
        >>> out, state = ctrl.step(ctrl.init_params(), ctrl.init_state(), torch.randn(3, 6))  # a batch of 3
        >>> out.shape, state.h.shape
        (torch.Size([3, 16]), torch.Size([3, 1, 16]))
    """
    return _make("gru", input_size, hidden_size, num_layers, bias, dropout, init=init)


def rnn(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
    init: str = "torch",
) -> Controller:
    """A multi-layer Elman RNN controller with ``nn.RNN``'s parameters; ``nonlinearity`` tanh or relu;
    ``init`` as :func:`controller`.

    Examples:
        >>> ctrl = memfn.rnn(input_size=6, hidden_size=16, nonlinearity="relu")
        >>> out, state = ctrl.step(ctrl.init_params(), ctrl.init_state(), torch.randn(6))
        >>> bool((out >= 0).all())
        True
    """
    return _make("rnn", input_size, hidden_size, num_layers, bias, dropout, nonlinearity, init)


def controller(
    rnn_type: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
    init: str = "torch",
) -> Controller:
    """Build a controller by name: ``rnn_type`` in {'lstm', 'gru', 'rnn'}.

    ``init`` picks how ``init_params`` initialises: ``'torch'`` as ``nn.LSTM``/``nn.GRU``/``nn.RNN``
    do, or ``'memoryless'``: the same, then every recurrent weight matrix zero and the LSTM forget
    gate (GRU update gate) bias :data:`MEMORYLESS_GATE_BIAS` (with ``bias=False`` only the weights),
    so the controller starts without a memory of its own and a memory-augmented network learns to
    use its external memory.

    Examples:
        >>> ctrl = memfn.controller("lstm", input_size=6, hidden_size=16, init="memoryless")
        >>> params = ctrl.init_params()
        >>> params["weight_hh_l0"].abs().sum(), params["bias_ih_l0"][16:32].unique()  # forget gate: bias -3
        (tensor(0.), tensor([-3.]))
    """
    kind = one_of("rnn_type", rnn_type, ("lstm", "gru", "rnn"))
    return _make(kind, input_size, hidden_size, num_layers, bias, dropout, nonlinearity, init)


__all__ = [
    "Controller",
    "INITS",
    "LSTMState",
    "MEMORYLESS_GATE_BIAS",
    "RNNState",
    "controller",
    "gru",
    "lstm",
    "rnn",
]
