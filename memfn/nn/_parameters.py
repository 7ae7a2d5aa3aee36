"""Parameter containers of the shells, under pytorch-dnc's parameter names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from memfn._memory import Memory
from memfn.cell import Cell
from memfn.nn._options import NetworkOptions


class Parameters(nn.Module):
    """A flat group of parameters under their own names (``nn.LSTM``'s, for the controllers)."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))


class IndependentInterface(nn.Module):
    """pytorch-dnc's ``independent_linears=True``: one linear per interface field (``<field>_transform``).

    One big linear is the same map with the field weights stacked; :meth:`fused` builds it, so the
    pure step is the same either way."""

    def __init__(self, fields: Sequence[tuple[str, int]], in_features: int) -> None:
        super().__init__()
        self.fields = [name for name, _ in fields]
        for name, size in fields:
            self.add_module(f"{name}_transform", nn.Linear(in_features, size))

    def fused(self, params: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
        names = [f"{prefix}{f}_transform" for f in self.fields]
        return (torch.cat([params[n + ".weight"] for n in names]), torch.cat([params[n + ".bias"] for n in names]))


def fused_parameters(params: dict[str, Tensor], interfaces: nn.ModuleList) -> dict[str, Tensor]:
    """``params`` (a shell's named parameters) as the pure cell names them: each
    :class:`IndependentInterface`'s linears fused into ``interfaces.<l>.weight`` and ``.bias``."""
    for layer, interface in enumerate(interfaces):
        if isinstance(interface, IndependentInterface):
            w, b = interface.fused(params, f"interfaces.{layer}.")
            params[f"interfaces.{layer}.weight"], params[f"interfaces.{layer}.bias"] = w, b
    return params


def shell_parameters(cell: Cell, memory: Memory, o: NetworkOptions) -> tuple[nn.ModuleList, nn.ModuleList, nn.Linear]:
    """``(controllers, interfaces, output)``: the modules holding a shell's parameters, named as
    pytorch-dnc names them; the controllers start from the cell's own initialisation."""
    init = cell.init_params()
    controllers = nn.ModuleList(
        Parameters({k.split(".", 2)[2]: v for k, v in init.items() if k.startswith(f"controllers.{layer}.")})
        for layer in range(o.num_layers)
    )
    interfaces = nn.ModuleList(
        IndependentInterface(memory.interface_fields, o.hidden_size)
        if o.independent_linears
        else nn.Linear(o.hidden_size, memory.interface_size)
        for _ in range(o.num_layers)
    )
    return controllers, interfaces, nn.Linear(o.hidden_size + memory.read_size, o.output_size)


__all__ = ["IndependentInterface", "Parameters", "fused_parameters", "shell_parameters"]
