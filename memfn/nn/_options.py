"""The shells' options: checked once, with pytorch-dnc's names and spellings, into one NamedTuple;
the controllers they configure."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from memfn import compat
from memfn._validation import one_of, positive_int, probability
from memfn.controllers import INITS, Controller, controller


class NetworkOptions(NamedTuple):
    """What a shell was built with, checked (the memory's own options are the memory factory's)."""

    input_size: int
    hidden_size: int
    rnn_type: str
    num_layers: int
    num_hidden_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    nonlinearity: str
    gpu_id: int
    independent_linears: bool
    share_memory: bool  # one of pytorch-dnc's two spellings, or True
    debug: bool
    clip: float
    output_size: int
    use_compile: bool
    checkpoint_every: int | None
    controller_init: str
    api: str  # the pytorch-dnc release whose layout forward returns
    device: torch.device


def network_options(
    input_size: int,
    hidden_size: int,
    rnn_type: str,
    num_layers: int,
    num_hidden_layers: int,
    bias: bool,
    batch_first: bool,
    dropout: float,
    bidirectional: bool,
    nonlinearity: str,
    gpu_id: int,
    independent_linears: bool,
    share_memory: Any,
    debug: bool,
    clip: float,
    device: Any,
    share_memory_between_layers: Any,
    output_size: int | None,
    compile: bool,
    checkpoint_every: int | None,
    controller_init: str,
    api: str | None,
) -> NetworkOptions:
    """Check a shell's constructor arguments (``ValueError`` naming the argument) and resolve the
    pytorch-dnc spellings: the device, the shared memory and the release spoken."""
    if bidirectional:
        raise NotImplementedError(
            "bidirectional=True is not supported: a memory is written in time order, so a "
            "backward pass over the sequence would need its own memory (pytorch-dnc ignores it)"
        )
    input_size = positive_int("input_size", input_size)
    rnn_type = rnn_type.lower() if isinstance(rnn_type, str) else rnn_type
    return NetworkOptions(
        input_size=input_size,
        hidden_size=positive_int("hidden_size", hidden_size),
        rnn_type=one_of("rnn_type", rnn_type, ("lstm", "gru", "rnn")),
        num_layers=positive_int("num_layers", num_layers),
        num_hidden_layers=positive_int("num_hidden_layers", num_hidden_layers),
        bias=bool(bias),
        batch_first=bool(batch_first),
        dropout=probability("dropout", dropout),
        nonlinearity=one_of("nonlinearity", nonlinearity, ("tanh", "relu")),
        gpu_id=gpu_id,
        independent_linears=bool(independent_linears),
        share_memory=compat.shared_memory(share_memory, share_memory_between_layers),
        debug=bool(debug),
        clip=clip,
        output_size=input_size if output_size is None else positive_int("output_size", output_size),
        use_compile=bool(compile),
        checkpoint_every=None if checkpoint_every is None else positive_int("checkpoint_every", checkpoint_every),
        controller_init=one_of("controller_init", controller_init, INITS),
        api=compat.dnc_api(api, device, share_memory_between_layers),
        device=compat.resolve_device(gpu_id, device),
    )


def controllers(o: NetworkOptions, read_size: int) -> list[Controller]:
    """The pure controller of each layer: layer 0 reads the input, layer ``l > 0`` layer ``l - 1``'s
    output, each with the last step's ``read_size`` read vector features."""
    return [
        controller(o.rnn_type, (o.input_size if layer == 0 else o.hidden_size) + read_size, o.hidden_size,
                   o.num_hidden_layers, o.bias, o.dropout, o.nonlinearity, o.controller_init)
        for layer in range(o.num_layers)
    ]  # fmt: skip


__all__ = ["NetworkOptions", "controllers", "network_options"]
