"""Pure controllers equal torch's nn.LSTM / nn.GRU / nn.RNN given the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memfn

CASES = [
    ("lstm", nn.LSTM, {}),
    ("gru", nn.GRU, {}),
    ("rnn", nn.RNN, {"nonlinearity": "tanh"}),
    ("rnn", nn.RNN, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kind,module,extra", CASES)
def test_controller_equals_torch_module(kind, module, extra, layers, bias):
    torch_rnn = module(7, 11, num_layers=layers, bias=bias, **extra).double()
    ctrl = memfn.controller(kind, 7, 11, num_layers=layers, bias=bias, **extra)
    params = dict(torch_rnn.named_parameters())
    assert set(params) == set(ctrl.init_params()), "parameter names must match torch's"
    for name, value in ctrl.init_params(dtype=torch.float64).items():
        assert value.shape == params[name].shape

    x = torch.randn(5, 3, 7, dtype=torch.float64)  # [T, B, I]
    expected, hidden = torch_rnn(x)
    state = ctrl.init_state(torch.float64)
    state = type(state)(*(t.unsqueeze(0).expand(3, *t.shape) for t in state))
    outs = []
    for x_t in x:
        y, state = ctrl.step(params, state, x_t)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs), expected)
    h_torch = hidden[0] if kind == "lstm" else hidden
    torch.testing.assert_close(state.h.transpose(0, 1), h_torch)
    if kind == "lstm":
        torch.testing.assert_close(state.c.transpose(0, 1), hidden[1])


def test_default_init_matches_torch_bounds():
    params = memfn.lstm(3, 16, num_layers=2).init_params(torch.Generator().manual_seed(0))
    for value in params.values():
        assert value.abs().max() <= 1 / 16**0.5
        assert value.std() > 0.1 / 16**0.5


def test_dropout_only_between_layers_and_only_in_training():
    ctrl = memfn.lstm(4, 8, num_layers=2, dropout=0.5)
    params, state, x = ctrl.init_params(), ctrl.init_state(), torch.randn(4)
    y_eval, _ = ctrl.step(params, state, x)
    y_eval2, _ = ctrl.step(params, state, x)
    assert torch.equal(y_eval, y_eval2)
    outs = {tuple(ctrl.step(params, state, x, training=True)[0].tolist()) for _ in range(5)}
    assert len(outs) > 1
    one_layer = memfn.lstm(4, 8, num_layers=1, dropout=0.5)
    p1, s1 = one_layer.init_params(), one_layer.init_state()
    assert torch.equal(one_layer.step(p1, s1, x, training=True)[0], one_layer.step(p1, s1, x)[0])


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="rnn_type must be one of 'lstm', 'gru', 'rnn'; got 'transformer'"):
        memfn.controller("transformer", 3, 4)
    with pytest.raises(ValueError, match="nonlinearity must be one of 'tanh', 'relu'; got 'sigmoid'"):
        memfn.rnn(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        memfn.lstm(3, 0)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1.5"):
        memfn.gru(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="init must be one of 'torch', 'memoryless'; got 'xavier'"):
        memfn.lstm(3, 4, init="xavier")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,gate", [("lstm", 1), ("gru", 1), ("rnn", None)])
def test_memoryless_init_has_no_recurrence_and_a_forgetting_cell(kind, gate, bias):
    h = 8
    params = memfn.controller(kind, 5, h, num_layers=2, bias=bias, init="memoryless").init_params()
    reference = memfn.controller(kind, 5, h, num_layers=2, bias=bias).init_params()
    assert set(params) == set(reference)
    for k in range(2):
        assert torch.count_nonzero(params[f"weight_hh_l{k}"]) == 0
        assert params[f"weight_ih_l{k}"].abs().max() <= 1 / h**0.5 and params[f"weight_ih_l{k}"].std() > 0
        if bias and gate is not None:
            gate_rows = slice(gate * h, (gate + 1) * h)
            # The gate's pre-activation bias is the sum of the two biases: sigmoid(-3) ~ 0.05 keeps 5 %.
            total = params[f"bias_ih_l{k}"][gate_rows] + params[f"bias_hh_l{k}"][gate_rows]
            assert torch.all(total == memfn.controllers.MEMORYLESS_GATE_BIAS)
            others = torch.ones(params[f"bias_ih_l{k}"].shape[0], dtype=torch.bool)
            others[gate_rows] = False
            assert params[f"bias_ih_l{k}"][others].abs().max() <= 1 / h**0.5


def test_memoryless_lstm_cell_forgets_at_first():
    ctrl = memfn.lstm(3, 16, init="memoryless")
    params, state = ctrl.init_params(), ctrl.init_state()
    _, state = ctrl.step(params, state, torch.randn(3))
    remembered = state.c.clone()
    _, state = ctrl.step(params, state, torch.zeros(3))
    # What the cell keeps of step 1 is the forget gate (~0.05) times it; the rest is step 2's own input.
    _, fresh = ctrl.step(params, ctrl.init_state(), torch.zeros(3))
    torch.testing.assert_close(state.c - fresh.c, torch.sigmoid(torch.tensor(-3.0)) * remembered, atol=1e-6, rtol=0)
