"""Dense DNC addressing (Graves et al. 2016, Methods), one pure function per quantity.

Shapes are written for one example; every function also broadcasts over leading batch axes.
Letters: ``N`` cells, ``W`` cell width, ``R`` read heads, ``H`` any number of heads/keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch._functorch.autograd_function import VmapInfo

from memfn.interface import BACKWARD, CONTENT, FORWARD
from memfn.numerics import cosine_similarity, exclusive_cumprod, masked_cosine_similarity, weighted_softmax

#: Usage is squashed into ``[ALLOCATION_EPS, 1]`` before the product in the allocation: a usage
#: of exactly 0 would zero every later factor of the cumulative product, and with it their
#: gradients (deepmind/dnc uses the same 1e-6).
ALLOCATION_EPS = 1e-6


def content_weights(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """Content addressing ``C(M, k, beta)[i] = softmax_i(beta * cos(k, M[i]))``.

    memory ``[N, W]``, keys ``[H, W]``, strengths ``[H]`` -> ``[H, N]``, each row a distribution.

    Examples:
        >>> memory = torch.eye(3)  # 3 cells of width 3
        >>> w = memfn.content_weights(memory, keys=torch.tensor([[0.0, 5.0, 0.0]]), strengths=torch.tensor([10.0]))
        >>> w.shape, w.argmax(-1)
        (torch.Size([1, 3]), tensor([1]))
    """
    return weighted_softmax(cosine_similarity(keys, memory), strengths)


def masked_content_weights(memory: Tensor, keys: Tensor, strengths: Tensor, masks: Tensor) -> Tensor:
    """Masked content addressing ``C(M, k, beta, m)[i] = softmax_i(beta * cos(k o m, M[i] o m))``.

    Csordas & Schmidhuber 2019, Sec. 3.1 (Eq. 2): each head's mask ``m`` in ``[0, 1]^W`` (a sigmoid
    of the controller) multiplies both the key and every memory row before the cosine, so a head
    can look up by part of a cell (a key stored beside its value) and ignore the rest.

    memory ``[N, W]``, keys ``[H, W]``, strengths ``[H]``, masks ``[H, W]`` -> ``[H, N]``. An
    all-ones mask gives :func:`content_weights`.

    Examples:
        >>> memory = torch.tensor([[1.0, 5.0], [1.0, -5.0]])  # same key (column 0), different values
        >>> key, beta = torch.tensor([[1.0, -5.0]]), torch.tensor([10.0])
        >>> memfn.addressing.masked_content_weights(memory, key, beta, torch.tensor([[1.0, 0.0]]))  # key only
        tensor([[0.5000, 0.5000]])
    """
    return weighted_softmax(masked_cosine_similarity(keys, memory.unsqueeze(-3), masks), strengths)


def retention(free_gates: Tensor, prev_read_weights: Tensor) -> Tensor:
    """Memory retention ``psi = prod_r (1 - f_r * w^r_{t-1})``.

    free_gates ``[R]``, prev_read_weights ``[R, N]`` -> ``[N]`` in ``[0, 1]``.

    Examples:
        >>> memfn.retention(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        tensor([0., 1., 1.])
    """
    return torch.prod(1.0 - free_gates.unsqueeze(-1) * prev_read_weights, dim=-2)


def usage(prev_usage: Tensor, prev_write_weights: Tensor, retention_vector: Tensor) -> Tensor:
    """Usage ``u_t = (u_{t-1} + w^w_{t-1} - u_{t-1} * w^w_{t-1}) * psi_t``.

    prev_usage ``[N]``, prev_write_weights ``[N]``, retention_vector ``[N]`` -> ``[N]`` in ``[0, 1]``.

    The write weights are a stop-gradient here, as in deepmind/dnc: usage only decides *where*
    to allocate, and gradients through it are noisy and unneeded.

    Examples:
        >>> memfn.usage(torch.tensor([0.5, 0.0]), torch.tensor([0.0, 1.0]), torch.ones(2))
        tensor([0.5000, 1.0000])
    """
    w = prev_write_weights.detach()
    return (prev_usage + w - prev_usage * w) * retention_vector


def combined_write_weights(write_weights_: Tensor) -> Tensor:
    """Several write heads as one for the usage: ``1 - prod_h (1 - w^w_h)`` (as deepmind/dnc).

    write_weights_ ``[Wh, N]`` -> ``[N]`` in ``[0, 1]``; with one head, that head's weights.

    Examples:
        >>> memfn.addressing.combined_write_weights(torch.tensor([[0.5, 0.0], [0.5, 1.0]]))
        tensor([0.7500, 1.0000])
    """
    return 1.0 - torch.prod(1.0 - write_weights_, dim=-2)


def allocation_weights(usage_vector: Tensor) -> Tensor:
    """Allocation ``a[phi_j] = (1 - u[phi_j]) * prod_{i<j} u[phi_i]``, ``phi = argsort(u)``.

    usage_vector ``[N]`` -> ``[N]`` in ``[0, 1]`` summing to at most 1; the least-used cell gets
    the largest weight. Gradients flow through the sorted *values*, never the permutation.

    Examples:
        >>> memfn.allocation_weights(torch.tensor([1.0, 0.0, 1.0])).round(decimals=3)  # cell 1 is free
        tensor([0., 1., 0.])
    """
    u = ALLOCATION_EPS + (1.0 - ALLOCATION_EPS) * usage_vector
    # Stable, so ties go to the lower index: deterministic, and vmap equals a loop.
    sorted_usage, phi = torch.sort(u, dim=-1, stable=True)
    sorted_allocation = (1.0 - sorted_usage) * exclusive_cumprod(sorted_usage)
    # Out-of-place scatter: a[phi_j] = sorted_allocation[j] (vmap- and compile-safe).
    return torch.zeros_like(sorted_allocation).scatter(-1, phi, sorted_allocation)


def multi_write_allocation_weights(usage_vector: Tensor, write_gates: Tensor) -> Tensor:
    """Allocation for several write heads, one after another (deepmind/dnc's ``write_allocation_weights``).

    Head ``h`` allocates from the usage left by the heads before it,
    ``u^{(h+1)} = u^{(h)} + (1 - u^{(h)}) g_h a_h`` with ``a_h = allocation(u^{(h)})``, so two
    heads that both allocate pick different cells. ``write_gates`` are ``g^w_h g^a_h``, how much
    of each head's write goes to its allocation.

    usage_vector ``[N]``, write_gates ``[Wh]`` -> ``[Wh, N]``; with one head, :func:`allocation_weights`.

    Examples:
        >>> a = memfn.addressing.multi_write_allocation_weights(torch.tensor([1.0, 0.0, 0.0]), torch.ones(2))
        >>> a.round(decimals=3)  # the first head takes cell 1, the second cell 2
        tensor([[0., 1., 0.],
                [0., 0., 1.]])
    """
    allocations = []
    u = usage_vector
    for h in range(write_gates.shape[-1]):
        a = allocation_weights(u)
        allocations.append(a)
        u = u + (1.0 - u) * write_gates[..., h : h + 1] * a
    return torch.stack(allocations, dim=-2)


def write_weights(
    write_content_weights: Tensor,
    allocation: Tensor,
    write_gate: Tensor,
    allocation_gate: Tensor,
) -> Tensor:
    """Write weighting ``w^w = g^w (g^a a + (1 - g^a) c^w)``.

    write_content_weights ``[N]``, allocation ``[N]``, write_gate ``[1]``, allocation_gate ``[1]``
    -> ``[N]``, summing to at most ``g^w``.

    Examples:
        >>> gate = torch.tensor([1.0])
        >>> memfn.write_weights(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), gate, allocation_gate=gate)
        tensor([0., 1.])
    """
    return write_gate * (allocation_gate * allocation + (1.0 - allocation_gate) * write_content_weights)


def updated_memory(memory: Tensor, write_weights_: Tensor, erase_vector: Tensor, write_vector: Tensor) -> Tensor:
    """Erase then add: ``M_t = M_{t-1} * (1 - w^w e^T) + w^w v^T``.

    memory ``[N, W]``, write_weights_ ``[N]``, erase_vector ``[W]``, write_vector ``[W]`` -> ``[N, W]``.

    Examples:
        >>> erase, write = torch.ones(3), torch.tensor([1.0, 2.0, 3.0])
        >>> memfn.updated_memory(torch.ones(2, 3), torch.tensor([1.0, 0.0]), erase, write)
        tensor([[1., 2., 3.],
                [1., 1., 1.]])
    """
    w = write_weights_.unsqueeze(-1)  # [N, 1]
    return memory * (1.0 - w * erase_vector.unsqueeze(-2)) + w * write_vector.unsqueeze(-2)


def multi_updated_memory(
    memory: Tensor, write_weights_: Tensor, erase_vectors: Tensor, write_vectors: Tensor
) -> Tensor:
    """Erase then add with several write heads: ``M_t = M_{t-1} o prod_h (1 - w_h e_h^T) + sum_h w_h v_h^T``.

    As deepmind/dnc: every head erases from the old memory, then every head adds. memory ``[N, W]``,
    write_weights_ ``[Wh, N]``, erase_vectors ``[Wh, W]``, write_vectors ``[Wh, W]`` -> ``[N, W]``;
    with one head, :func:`updated_memory`.

    Examples:
        >>> w, e = torch.eye(2), torch.ones(2, 2)
        >>> memfn.addressing.multi_updated_memory(torch.ones(2, 2), w, e, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([[1., 2.],
                [3., 4.]])
    """
    keep = torch.prod(1.0 - write_weights_.unsqueeze(-1) * erase_vectors.unsqueeze(-2), dim=-3)  # [N, W]
    return memory * keep + write_weights_.transpose(-1, -2) @ write_vectors


def deallocated_memory(memory: Tensor, retention_vector: Tensor) -> Tensor:
    """De-allocation: freed cells lose their content, ``M_{t-1} o (psi_t 1^T)``.

    Csordas & Schmidhuber 2019, Sec. 3.2 (Eq. 3): the memory update becomes
    ``M_t = M_{t-1} o (psi_t 1^T) o (E - w^w_t e_t^T) + w^w_t v_t^T``: the retention vector ``psi``
    (:func:`retention`, from the free gates) that lowers a cell's usage also scales its content, so a
    freed cell no longer answers content lookups. Apply it before :func:`updated_memory`. With zero
    free gates ``psi = 1`` and the memory is unchanged.

    memory ``[N, W]``, retention_vector ``[N]`` -> ``[N, W]``.

    Examples:
        >>> memfn.addressing.deallocated_memory(torch.ones(2, 3), torch.tensor([1.0, 0.0]))  # cell 1 freed
        tensor([[1., 1., 1.],
                [0., 0., 0.]])
    """
    return memory * retention_vector.unsqueeze(-1)


def precedence(prev_precedence: Tensor, write_weights_: Tensor) -> Tensor:
    """Precedence ``p_t = (1 - sum_i w^w[i]) p_{t-1} + w^w``.

    prev_precedence ``[N]``, write_weights_ ``[N]`` -> ``[N]`` in ``[0, 1]``, summing to at most 1.

    Examples:
        >>> memfn.precedence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor([0., 1.])
    """
    return (1.0 - write_weights_.sum(-1, keepdim=True)) * prev_precedence + write_weights_


def link_matrix(prev_link: Tensor, prev_precedence: Tensor, write_weights_: Tensor) -> Tensor:
    """Temporal links ``L_t[i,j] = (1 - w[i] - w[j]) L_{t-1}[i,j] + w[i] p_{t-1}[j]``, ``L[i,i] = 0``.

    prev_link ``[N, N]``, prev_precedence ``[N]``, write_weights_ ``[N]`` -> ``[N, N]`` in
    ``[0, 1]``; ``L[i, j]`` is the degree to which cell ``i`` was written right after cell ``j``.

    The link matrix is the one ``N x N`` quantity of the DNC, so it is a custom operator with a
    hand-written backward: autograd would keep ``(1 - w_i - w_j)`` and the masked product, two more
    ``N x N`` tensors per step, and this keeps only ``prev_link``, the previous step's output (kept
    anyway). Being opaque to ``torch.compile``, it also keeps inductor from regenerating that
    backward as a strided scalar loop, which was slower than these few large kernels.

    Examples:
        >>> p = torch.tensor([1.0, 0.0])  # cell 0 was written last
        >>> memfn.link_matrix(torch.zeros(2, 2), p, torch.tensor([0.0, 1.0]))  # now cell 1: L[1, 0] = 1
        tensor([[0., 0.],
                [1., 0.]])
    """
    if torch.compiler.is_compiling():
        return cast(Tensor, _link_op(prev_link, prev_precedence, write_weights_))
    # Eager: an autograd.Function, which (unlike a custom op) torch.func.grad/vjp can see through.
    return cast(Tensor, _LinkUpdate.apply(prev_link, prev_precedence, write_weights_))  # type: ignore[no-untyped-call]


def _off_diagonal(like: Tensor) -> Tensor:
    # A multiplicative mask rather than writing the diagonal: one unbatched N x N constant.
    n = like.shape[-1]
    return 1.0 - torch.eye(n, dtype=like.dtype, device=like.device)


def _batch_first(info: VmapInfo, in_dims: Sequence[int | None], *args: Tensor) -> tuple[Tensor, ...]:
    """vmap rule helper: these ops broadcast over leading axes, so move (or add) the batch axis first."""
    return tuple(
        a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape) for a, d in zip(args, in_dims)
    )


@torch.library.custom_op("memfn::link_matrix", mutates_args=())
def _link_op(prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> Tensor:
    return _link_kernel(prev_link, prev_precedence, w)


def _promoted(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors in their common dtype. Under autocast the write and read weights come in a lower
    precision than the state (float32 links): the kernels compute in the wider one, and backward
    hands each input its gradient in its own dtype (autocast does not reach backward)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def _link_kernel(prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> Tensor:
    # In-place arithmetic on the one new tensor: at large N this is bound by memory traffic.
    prev_link, prev_precedence, w = _promoted(prev_link, prev_precedence, w)
    w_i, w_j = w.unsqueeze(-1), w.unsqueeze(-2)
    link = (1.0 - w_i - w_j).mul_(prev_link)
    link.add_(w_i * prev_precedence.unsqueeze(-2))
    return link.mul_(_off_diagonal(link))  # a cell cannot follow itself


@_link_op.register_fake
def _(prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> Tensor:
    shape = torch.broadcast_shapes(prev_link.shape, w.unsqueeze(-1).shape, prev_precedence.unsqueeze(-2).shape)  # type: ignore[no-untyped-call]
    dtype = torch.promote_types(torch.promote_types(prev_link.dtype, prev_precedence.dtype), w.dtype)
    return prev_link.new_empty(shape, dtype=dtype)


@torch.library.custom_op("memfn::link_matrix_backward", mutates_args=())
def _link_backward_op(
    grad: Tensor, prev_link: Tensor, prev_precedence: Tensor, w: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return _link_backward_kernel(grad, prev_link, prev_precedence, w)


def _link_backward_kernel(
    grad: Tensor, prev_link: Tensor, prev_precedence: Tensor, w: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    dtypes = prev_link.dtype, prev_precedence.dtype, w.dtype
    grad, prev_link, prev_precedence, w = _promoted(grad, prev_link, prev_precedence, w)
    g = grad * _off_diagonal(grad)  # the diagonal of L_t is constant
    w_i, w_j = w.unsqueeze(-1), w.unsqueeze(-2)
    d_prev_link = (1.0 - w_i - w_j).mul_(g)
    g_link = g * prev_link
    # dL[i,j]/dw[k]: -L_prev[k,j] + p[j] through w_i (i = k), -L_prev[i,k] through w_j (j = k).
    d_w = (g @ prev_precedence.unsqueeze(-1)).squeeze(-1) - g_link.sum(-1) - g_link.sum(-2)
    d_precedence = (w_j @ g).squeeze(-2)
    return tuple(t.to(dtype) for t, dtype in zip((d_prev_link, d_precedence, d_w), dtypes))  # type: ignore[return-value]


@_link_backward_op.register_fake
def _(grad: Tensor, prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (
        grad.new_empty(grad.shape, dtype=prev_link.dtype),
        grad.new_empty(grad.shape[:-1], dtype=prev_precedence.dtype),
        grad.new_empty(grad.shape[:-1], dtype=w.dtype),
    )


class _LinkUpdate(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> Tensor:
        return _link_kernel(prev_link, prev_precedence, w)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _link_backward_kernel(grad, *ctx.saved_tensors)


def _link_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)


def _link_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return cast(tuple[Tensor, Tensor, Tensor], _link_backward_op(grad, *ctx.saved_tensors))


_link_op.register_autograd(_link_backward, setup_context=_link_setup_context)
torch.library.register_vmap(_link_op, lambda info, in_dims, *a: (_link_op(*_batch_first(info, in_dims, *a)), 0))
torch.library.register_vmap(
    _link_backward_op, lambda info, in_dims, *a: (_link_backward_op(*_batch_first(info, in_dims, *a)), (0, 0, 0))
)


def directional_read_weights(link: Tensor, prev_read_weights: Tensor, forward: bool) -> Tensor:
    """Forward ``f = L w^r_{t-1}`` or backward ``b = L^T w^r_{t-1}`` weights, per read head.

    link ``[N, N]``, prev_read_weights ``[R, N]`` -> ``[R, N]``.

    Examples:
        >>> link = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # cell 1 was written after cell 0
        >>> memfn.directional_read_weights(link, torch.tensor([[1.0, 0.0]]), forward=True)
        tensor([[0., 1.]])
    """
    # Row form: f[r, i] = sum_j L[i, j] w[r, j] = (w L^T)[r, i];  b[r, j] = (w L)[r, j].
    return prev_read_weights @ (link.transpose(-1, -2) if forward else link)


def forward_backward_read_weights(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Both directional weightings at once: ``(f, b)`` as :func:`directional_read_weights` gives them.

    link ``[N, N]``, prev_read_weights ``[R, N]`` -> two ``[R, N]``. Same values; the backward is
    fused: the link gradient of both reads is one ``[N, 2R] @ [2R, N]`` product instead of two
    ``N x N`` products and their sum (a custom operator, like :func:`link_matrix`).

    Examples:
        >>> link = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # cell 1 was written after cell 0
        >>> memfn.forward_backward_read_weights(link, torch.tensor([[0.0, 1.0]]))  # (f, b) from cell 1
        (tensor([[0., 0.]]), tensor([[1., 0.]]))
    """
    if torch.compiler.is_compiling():
        return cast(tuple[Tensor, Tensor], _reads_op(link, prev_read_weights))
    return cast(tuple[Tensor, Tensor], _DirectionalReads.apply(link, prev_read_weights))  # type: ignore[no-untyped-call]


@torch.library.custom_op("memfn::forward_backward_read_weights", mutates_args=())
def _reads_op(link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    return _reads_kernel(link, w)


def _reads_kernel(link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    link, w = _promoted(link, w)
    return w @ link.transpose(-1, -2), w @ link


@_reads_op.register_fake
def _(link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    shape = torch.broadcast_shapes(link.shape[:-2], w.shape[:-2]) + w.shape[-2:]  # type: ignore[no-untyped-call]
    dtype = torch.promote_types(link.dtype, w.dtype)
    return w.new_empty(shape, dtype=dtype), w.new_empty(shape, dtype=dtype)


@torch.library.custom_op("memfn::forward_backward_read_weights_backward", mutates_args=())
def _reads_backward_op(d_forward: Tensor, d_backward: Tensor, link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    return _reads_backward_kernel(d_forward, d_backward, link, w)


def _reads_backward_kernel(d_forward: Tensor, d_backward: Tensor, link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    # f = w L^T: dL += d_f^T w, dw += d_f L.   b = w L: dL += w^T d_b, dw += d_b L^T.
    link_dtype, w_dtype = link.dtype, w.dtype
    d_forward, d_backward, link, w = _promoted(d_forward, d_backward, link, w)
    left = torch.cat([d_forward, w], dim=-2).transpose(-1, -2)  # [N, 2R]
    right = torch.cat([w, d_backward], dim=-2)  # [2R, N]
    d_w = d_forward @ link + d_backward @ link.transpose(-1, -2)
    return (left @ right).to(link_dtype), d_w.to(w_dtype)


@_reads_backward_op.register_fake
def _(d_forward: Tensor, d_backward: Tensor, link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    n = link.shape[-1]
    return link.new_empty(*d_forward.shape[:-2], n, n), d_forward.new_empty(d_forward.shape, dtype=w.dtype)


class _DirectionalReads(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(link: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        return _reads_kernel(link, w)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, d_forward: Tensor, d_backward: Tensor) -> tuple[Tensor, Tensor]:
        return _reads_backward_kernel(d_forward, d_backward, *ctx.saved_tensors)


def _reads_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)


def _reads_backward(ctx: Any, d_forward: Tensor | None, d_backward: Tensor | None) -> tuple[Tensor, Tensor]:
    link, w = ctx.saved_tensors
    d_forward = torch.zeros_like(w) if d_forward is None else d_forward
    d_backward = torch.zeros_like(w) if d_backward is None else d_backward
    return cast(tuple[Tensor, Tensor], _reads_backward_op(d_forward, d_backward, link, w))


_reads_op.register_autograd(_reads_backward, setup_context=_reads_setup_context)
torch.library.register_vmap(_reads_op, lambda info, in_dims, *a: (_reads_op(*_batch_first(info, in_dims, *a)), (0, 0)))
torch.library.register_vmap(
    _reads_backward_op, lambda info, in_dims, *a: (_reads_backward_op(*_batch_first(info, in_dims, *a)), (0, 0))
)


def sharpened_weights(weights: Tensor, sharpness: Tensor) -> Tensor:
    """Link distribution sharpness: ``S(d, s) = sum(d) * d^s / sum(d^s)``, per head.

    Csordas & Schmidhuber 2019, Sec. 3.3 (Eq. 6): the forward and backward weightings are raised to
    a learned power ``s >= 1`` (``oneplus`` of the controller, one for each read head and direction)
    and renormalised, which undoes the blurring that the soft link matrix accumulates. Difference
    from the paper: the result keeps the mass ``sum(d)`` of the plain weighting instead of summing
    to 1, so ``s = 1`` is exactly the plain DNC, and a head at the end of a chain (``f = 0``) still
    reads nothing forward (the paper's ``(d + eps) / max`` makes it uniform). Zero entries stay
    zero, with zero gradient.

    weights ``[..., H, N]``, sharpness ``[..., H]`` -> ``[..., H, N]``.

    Examples:
        >>> memfn.addressing.sharpened_weights(torch.tensor([[0.2, 0.4, 0.0]]), torch.tensor([2.0]))
        tensor([[0.1200, 0.4800, 0.0000]])
    """
    peak = weights.amax(-1, keepdim=True)
    positive = weights > 0
    # d / max(d) in (0, 1]: the power neither under- nor overflows; where d = 0 use 1 (then masked
    # out) so that neither d^s nor its derivative in s (d^s log d) is evaluated at 0.
    scaled = torch.where(positive, weights / torch.where(peak > 0, peak, torch.ones_like(peak)), 1.0)
    powered = torch.where(positive, scaled.pow(sharpness.unsqueeze(-1)), 0.0)
    total = powered.sum(-1, keepdim=True)
    mass = weights.sum(-1, keepdim=True)
    return mass * powered / torch.where(total > 0, total, torch.ones_like(total))


def multi_forward_backward_read_weights(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward and backward weightings through each write head's links (deepmind/dnc's ``num_writes``).

    link ``[Wh, N, N]``, prev_read_weights ``[R, N]`` -> ``(f, b)``, each ``[R, Wh, N]``:
    ``f[r, h] = L_h w^r_{t-1}``, ``b[r, h] = L_h^T w^r_{t-1}``.

    Examples:
        >>> links = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])  # 0 -> 1; 1 -> 0
        >>> f, b = memfn.addressing.multi_forward_backward_read_weights(links, torch.tensor([[1.0, 0.0]]))
        >>> f
        tensor([[[0., 1.],
                 [0., 0.]]])
    """
    w = prev_read_weights.unsqueeze(-3).expand(*link.shape[:-2], *prev_read_weights.shape[-2:])
    fwd, bwd = forward_backward_read_weights(link, w)  # [Wh, R, N] each
    return fwd.movedim(-3, -2), bwd.movedim(-3, -2)


def multi_read_weights(
    read_content_weights: Tensor, forward_weights: Tensor, backward_weights: Tensor, read_modes: Tensor
) -> Tensor:
    """Read weighting with several write heads: ``w^r = sum_h pi_b[h] b_h + sum_h pi_f[h] f_h + pi_c c``.

    read_content_weights ``[R, N]``, forward/backward weights ``[R, Wh, N]``, read_modes
    ``[R, 2 Wh + 1]`` ordered (backward per head, forward per head, content), as deepmind/dnc
    -> ``[R, N]``. With one write head, :func:`read_weights`.

    Examples:
        >>> modes = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])  # forward through write head 0's links
        >>> f = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
        >>> memfn.addressing.multi_read_weights(torch.zeros(1, 2), f, torch.zeros(1, 2, 2), modes)
        tensor([[0., 1.]])
    """
    heads = forward_weights.shape[-2]
    pi = read_modes.unsqueeze(-1)  # [R, 2Wh + 1, 1]
    return (
        (pi[..., :heads, :] * backward_weights).sum(-2)
        + (pi[..., heads : 2 * heads, :] * forward_weights).sum(-2)
        + pi[..., 2 * heads, :] * read_content_weights
    )


def read_weights(
    read_content_weights: Tensor, forward_weights: Tensor, backward_weights: Tensor, read_modes: Tensor
) -> Tensor:
    """Read weighting ``w^r = pi[backward] b + pi[forward] f + pi[content] c``.

    Each of the weights ``[R, N]``; read_modes ``[R, 3]`` ordered (backward, forward, content)
    -> ``[R, N]``, each row summing to at most 1.

    Examples:
        >>> content_only = torch.tensor([[0.0, 0.0, 1.0]])
        >>> memfn.read_weights(torch.tensor([[0.2, 0.8]]), torch.zeros(1, 2), torch.zeros(1, 2), content_only)
        tensor([[0.2000, 0.8000]])
    """
    pi = read_modes.unsqueeze(-1)  # [R, 3, 1]
    return (
        pi[..., BACKWARD, :] * backward_weights
        + pi[..., FORWARD, :] * forward_weights
        + pi[..., CONTENT, :] * read_content_weights
    )


def read_vectors(memory: Tensor, read_weights_: Tensor) -> Tensor:
    """Read vectors ``r = M^T w^r`` per head: memory ``[N, W]``, read_weights_ ``[R, N]`` -> ``[R, W]``.

    Examples:
        >>> memfn.read_vectors(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0]]))
        tensor([[3., 4.]])
    """
    return read_weights_ @ memory


def _link_out_of_place(prev_link: Tensor, prev_precedence: Tensor, w: Tensor) -> Tensor:
    # The same values as _link_kernel without its in-place arithmetic (decompositions must be functional).
    w_i, w_j = w.unsqueeze(-1), w.unsqueeze(-2)
    link = (1.0 - w_i - w_j) * prev_link + w_i * prev_precedence.unsqueeze(-2)
    return link * _off_diagonal(link)


def aten_decompositions() -> dict[torch._ops.OperatorBase, Callable[..., Any]]:
    """This module's custom operators (forward only) as plain aten code, for
    ``ExportedProgram.run_decompositions``: an exported step then loads and runs without memfn."""
    return {
        torch.ops.memfn.link_matrix.default: _link_out_of_place,
        torch.ops.memfn.forward_backward_read_weights.default: _reads_kernel,
    }


__all__ = [
    "ALLOCATION_EPS",
    "allocation_weights",
    "combined_write_weights",
    "content_weights",
    "deallocated_memory",
    "directional_read_weights",
    "forward_backward_read_weights",
    "link_matrix",
    "masked_content_weights",
    "multi_forward_backward_read_weights",
    "multi_read_weights",
    "multi_updated_memory",
    "multi_write_allocation_weights",
    "precedence",
    "read_vectors",
    "read_weights",
    "retention",
    "sharpened_weights",
    "updated_memory",
    "usage",
    "write_weights",
]
