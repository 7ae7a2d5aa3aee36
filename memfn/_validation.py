"""Argument checks that fail early with a message naming the argument and what is accepted."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from torch import Tensor


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def probability(name: str, value: Any) -> float:
    """Return ``value`` as a float in ``[0, 1)``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= cast(float, value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def one_of(name: str, value: Any, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``accepted``, else raise ``ValueError`` listing them."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return cast(str, value)


# -- states at the boundary of the pure API ---------------------------------------------------------
#
# A state is checked once where it enters (a public ``step``, ``run``, a shell's forward) against
# one example's state built on the meta device (shapes and dtypes, no memory). Never while
# ``torch.compile`` traces: a check there would add guards to the per-step graph, and the boundary
# outside it has already run.


def _leaves_with_names(tree: Any, expected: Any, name: str) -> list[tuple[str, Any, Any]]:
    """``(name, received, expected)`` for each tensor of ``expected``, checking the structure on the way."""
    import torch

    if isinstance(expected, torch.Tensor):
        if not isinstance(tree, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tree).__name__}")
        return [(name, tree, expected)]
    fields = getattr(type(expected), "_fields", None)
    if fields is not None:  # a NamedTuple state: the same type (or one with the same fields)
        if getattr(type(tree), "_fields", None) != fields:
            raise TypeError(
                f"{name} must be a {type(expected).__name__} (fields {', '.join(fields)}), got {_kind(tree)}"
            )
        pairs = [(f"{name}.{f}", getattr(tree, f), e) for f, e in zip(fields, expected)]
    else:  # a tuple: one state per layer
        if not isinstance(tree, (tuple, list)) or len(tree) != len(expected):
            raise TypeError(f"{name} must be a tuple of {len(expected)} states (one per layer), got {_kind(tree)}")
        pairs = [(f"{name}[{i}]", t, e) for i, (t, e) in enumerate(zip(tree, expected))]
    return [leaf for n, t, e in pairs for leaf in _leaves_with_names(t, e, n)]


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)) and not hasattr(type(value), "_fields"):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


#: ``id(expected) -> (expected, its treespec, [(path, shape, is floating, dtype)] per leaf)``.
_SPECS: dict[int, tuple[Any, Any, list[tuple[str, Any, bool, Any]]]] = {}


def _spec(expected: Any) -> tuple[Any, list[tuple[str, Any, bool, Any]]]:
    """``expected``'s treespec and leaf descriptions, built once (a state check runs every call)."""
    import optree

    cached = _SPECS.get(id(expected))
    if cached is None or cached[0] is not expected:
        leaves = _leaves_with_names(expected, expected, "")
        spec = optree.tree_structure(expected)
        cached = (expected, spec, [(n, w.shape, w.is_floating_point(), w.dtype) for n, _, w in leaves])
        _SPECS[id(expected)] = cached
    return cached[1], cached[2]


def check_state(state: Any, expected: Any, name: str = "state", batch_shape: tuple[int, ...] | None = None) -> None:
    """Raise unless ``state`` matches ``expected`` (one example's state) in structure, shapes and dtypes.

    Every leaf must have ``expected``'s shape after the same leading batch axes (``batch_shape`` if
    given, else whatever the first leaf has: the pure functions broadcast over them), floating leaves
    one floating dtype, integer leaves ``int64``, and all leaves one device. ``TypeError`` for a
    wrong structure or dtype, ``ValueError`` naming the field, the expected and the received shape.
    """
    import optree
    import torch

    if torch.compiler.is_compiling():
        return
    spec, wanted = _spec(expected)
    leaves, received = optree.tree_flatten(state)
    if received != spec:
        _leaves_with_names(state, expected, name)  # raises, naming where the structure differs
        raise TypeError(f"{name} must have the structure of {type(expected).__name__}")
    lead = None if batch_shape is None else torch.Size(batch_shape)
    float_field = float_dtype = device_field = device = None
    for got, (path, want_shape, want_float, want_dtype) in zip(leaves, wanted):
        if not isinstance(got, torch.Tensor):
            raise TypeError(f"{name}{path} must be a tensor, got {type(got).__name__}")
        shape = got.shape
        extra = len(shape) - len(want_shape)
        if lead is None and extra >= 0:
            lead = shape[:extra]
        if extra < 0 or shape[extra:] != want_shape or shape[:extra] != lead:
            shown = (*(lead or ()), *want_shape)
            source = f" (batch shape {tuple(lead)} from {name}{wanted[0][0]})" if lead and batch_shape is None else ""
            raise ValueError(f"{name}{path} has shape {tuple(shape)}, expected {shown}{source}")
        dtype = got.dtype
        if want_float:
            if not dtype.is_floating_point:
                raise TypeError(f"{name}{path} must have a floating dtype, got {dtype}")
            if float_dtype is None:
                float_field, float_dtype = path, dtype
            elif dtype != float_dtype:
                raise TypeError(
                    f"{name}{path} has dtype {dtype} but {name}{float_field} has {float_dtype}: a state has one "
                    "floating dtype"
                )
        elif dtype != want_dtype:
            raise TypeError(f"{name}{path} must have dtype {want_dtype}, got {dtype}")
        if device is None:
            device_field, device = path, got.device
        elif got.device != device:
            raise ValueError(
                f"{name}{path} is on {got.device} but {name}{device_field} is on {device}: move the state with .to()"
            )


def check_params(params: Any, expected: dict[str, Any], dtype: Any = None, device: Any = None) -> None:
    """Raise unless ``params`` has every name of ``expected`` with its shape (and ``dtype``/``device``)."""
    import torch

    if torch.compiler.is_compiling():
        return
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of tensors by name, got {_kind(params)}")
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"params lacks {', '.join(map(repr, missing[:3]))}{' ...' if len(missing) > 3 else ''}")
    for key, want in expected.items():
        got = params[key]
        if not isinstance(got, torch.Tensor):
            raise TypeError(f"params[{key!r}] must be a tensor, got {type(got).__name__}")
        if got.shape != want.shape:
            raise ValueError(f"params[{key!r}] has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        if dtype is not None and got.dtype != dtype:
            raise TypeError(f"params[{key!r}] has dtype {got.dtype} but the state has {dtype}: convert one of them")
        if device is not None and got.device != device:
            raise ValueError(f"params[{key!r}] is on {got.device} but the state is on {device}: move one with .to()")


def floating_dtype_and_device(state: Any) -> tuple[Any, Any]:
    """The dtype of a state's first floating leaf and its device (``(None, None)`` if it has none)."""
    import optree

    for leaf in optree.tree_leaves(state):
        if leaf.is_floating_point():
            return leaf.dtype, leaf.device
    return None, None


def check_same_dtype(name: str, value: Any, state: Any) -> None:
    """Raise ``TypeError`` if the floating tensor ``value`` and ``state`` differ in dtype (outside
    autocast, where a lower-precision input is expected) or ``ValueError`` if they differ in device."""
    import torch

    if torch.compiler.is_compiling() or not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return
    dtype, device = floating_dtype_and_device(state)
    if dtype is None:
        return
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the state is on {device}: move one of them with .to()")
    if value.dtype != dtype and not torch.is_autocast_enabled(value.device.type):
        raise TypeError(f"{name} has dtype {value.dtype} but the state has {dtype}: convert one of them (.to({dtype}))")


def check_module_input(x: Any, module: Any) -> None:
    """Raise unless ``x`` is a floating ``(B, T, input_size)`` (or time-first) tensor on the device
    and with the dtype of the shell ``module``'s parameters, saying how to fix it. Under autocast
    any floating input is accepted. With ``debug`` it needs a time step: the debug record has one
    row per step and layer."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype={x.dtype}")
    layout = "(batch, time, input_size)" if module.batch_first else "(time, batch, input_size)"
    if x.ndim != 3 or x.shape[-1] != module.input_size:
        raise ValueError(f"input must have shape {layout} with input_size={module.input_size}, got {tuple(x.shape)}")
    like, debug, batch_first = next(module.parameters()), module.debug, module.batch_first

    if debug and x.shape[1 if batch_first else 0] == 0:
        raise ValueError("input has no time steps (T = 0) but debug=True records one row per step; pass debug=False")

    if x.device != like.device:
        raise ValueError(
            f"input is on {x.device} but the module's parameters are on {like.device}: move the input with "
            f"input.to('{like.device}') or the module with model.to('{x.device}')"
        )
    if x.dtype != like.dtype and not torch.is_autocast_enabled(x.device.type):
        fix = {torch.float64: "model.double()", torch.float16: "model.half()", torch.bfloat16: "model.bfloat16()",
                  torch.float32: "model.float()"}.get(x.dtype, f"model.to({x.dtype})")  # fmt: skip
        raise TypeError(
            f"input has dtype {x.dtype} but the module's parameters are {like.dtype}: convert the input with "
            f"input.to({like.dtype}) or the module with {fix}"
        )


def time_major(input: Any, module: Any) -> tuple[Tensor, Tensor | None]:
    """``(xs [T, B, I] contiguous, lengths [B] or None)`` from a shell's ``input`` (a tensor in
    ``module.batch_first``'s layout, or a ``PackedSequence``), checked by :func:`check_module_input`."""
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

    if isinstance(input, PackedSequence):
        xs, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
        check_module_input(xs.transpose(0, 1) if module.batch_first else xs, module)
    else:
        check_module_input(input, module)
        xs, lengths = (input.transpose(0, 1) if module.batch_first else input), None
    # Contiguous: every step's slice then has the same strides whatever the sequence length (a
    # compiled step guards on strides, so a strided view would recompile).
    return xs.contiguous(), lengths
