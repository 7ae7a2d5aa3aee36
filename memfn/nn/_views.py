"""``rnn.memories[i]``: pytorch-dnc's ``Memory`` objects, as views of a shell's pure memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, cast

import optree
import torch
from torch import Tensor

from memfn import compat
from memfn._dnc import PLAIN
from memfn._dnc import read as dense_read
from memfn._dnc import write as dense_write
from memfn.interface import DNCInterface
from memfn.nn._hidden import checked_leaf

if TYPE_CHECKING:
    from memfn.nn._network import MemoryNetwork


class MemoryView:
    """``rnn.memories[i]``: a layer's memory with pytorch-dnc's ``Memory`` methods, on the pure core.

    ``hidden`` is the layer's memory state (a dict with its keys, as pytorch-dnc's, or the state
    NamedTuple) with a batch axis; the methods return new states as plain dicts, as pytorch-dnc's
    ``Memory`` does, and never mutate the one given.

    Examples:
        >>> rnn = memfn.DNC(input_size=4, hidden_size=8, nr_cells=5, cell_size=3, read_heads=2)
        >>> mem = rnn.memories[0]
        >>> hidden = mem.reset(batch_size=2)  # pytorch-dnc's Memory.reset: a zero state dict
        >>> reads, hidden = mem(torch.randn(2, 8), hidden)  # one memory step from a controller output
        >>> reads.shape, hidden["usage_vector"].shape
        (torch.Size([2, 2, 3]), torch.Size([2, 5]))
    """

    def __init__(self, network: MemoryNetwork, index: int) -> None:
        self._network = network
        self.index = index

    def _zero(self, batch_size: int, like: Tensor) -> Any:
        zero = self._network.zero_state(batch_size, like).memory
        return zero if self._network.share_memory else zero[self.index]

    def _state(self, hidden: Any, batch_size: int, like: Tensor) -> Any:
        return compat.memory_state("hidden", hidden, self._zero(batch_size, like), checked_leaf)

    def reset(self, batch_size: int = 1, hidden: Any = None, erase: bool = True) -> dict[str, Tensor]:
        """A zero state for ``batch_size`` examples, or a copy of ``hidden`` (zeroed if ``erase``)."""
        p = next(self._network.parameters())
        zero = self._zero(batch_size, p)
        if hidden is None or erase:
            return compat.memory_dict(zero)
        return compat.memory_dict(cast(NamedTuple, optree.tree_map(torch.clone, self._state(hidden, batch_size, p))))

    def __call__(self, xi: Tensor, hidden: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """pytorch-dnc's ``Memory.forward``: controller output ``(B, H)`` -> ``(reads (B, R, W), state)``."""
        net = self._network
        params = net.step_params()
        w, b = params[f"interfaces.{self.index}.weight"], params[f"interfaces.{self.index}.bias"]
        state = self._state(hidden, xi.shape[0], xi)
        reads, new = net.pure_memory.step(state, torch.nn.functional.linear(xi, w, b))
        return reads, compat.memory_dict(new)


class DenseMemoryView(MemoryView):
    """A DNC layer's memory view: adds pytorch-dnc's ``Memory.write`` and ``Memory.read``."""

    def write(
        self,
        write_key: Tensor,
        write_vector: Tensor,
        erase_vector: Tensor,
        free_gates: Tensor,
        read_strengths: Tensor | None,
        write_strength: Tensor,
        write_gate: Tensor,
        allocation_gate: Tensor,
        hidden: Any,
    ) -> dict[str, Tensor]:
        """pytorch-dnc's ``Memory.write`` (activated values, its shapes) -> the new state.
        ``read_strengths`` is accepted for signature compatibility and unused, as in ``dnc``.
        The network's de-allocation and write heads apply (erase and write vectors ``(B, Wh, W)``);
        pytorch-dnc's signature has no masks, so the write key is not masked here."""
        options = self._network.pure_memory.config or PLAIN
        squeeze = options.write_heads == 1
        state = self._state(hidden, write_key.shape[0], write_key)
        io = DNCInterface(
            # write() reads no read field: they are left None.
            read_keys=cast(Tensor, None), read_strengths=cast(Tensor, None), read_modes=cast(Tensor, None),
            write_key=write_key, write_strength=write_strength,
            erase_vector=erase_vector.squeeze(-2) if squeeze else erase_vector,
            write_vector=write_vector.squeeze(-2) if squeeze else write_vector,
            free_gates=free_gates, allocation_gate=allocation_gate, write_gate=write_gate,
        )  # fmt: skip
        return compat.memory_dict(dense_write(state, io, options))

    def read(
        self, read_keys: Tensor, read_strengths: Tensor, read_modes: Tensor, hidden: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """pytorch-dnc's ``Memory.read``: ``(read_vectors (B, R, W), new state)`` (no masks or
        sharpness: pytorch-dnc's signature has no place for them)."""
        state = self._state(hidden, read_keys.shape[0], read_keys)
        reads, new = dense_read(state, read_keys, read_strengths, read_modes)
        return reads, compat.memory_dict(new)


__all__ = ["DenseMemoryView", "MemoryView"]
