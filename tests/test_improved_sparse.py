"""Issue 18 for the sparse memories: masked content reads (SAM, SDNC) and link sharpness (SDNC).

Defaults unchanged (stored numbers), each option's reduction to the plain memory, the masked
candidates' approximation, float64 gradients, the fast path against the pure step, the shells and
the task flags. vmap and compile of the steps with the options: tests/test_transforms.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import memfn
from memfn import addressing as A
from memfn.numerics import cosine_similarity, masked_cosine_similarity
from memfn.sparse import addressing as S
from memfn.sparse import split_sam_interface, split_sdnc_interface
from memfn.sparse._links import temporal_read_slots
from memfn.sparse.knn import nearest_cells
from memfn.tasks.train import UserError, build_model, build_parser
from tests.data.make_sparse_reference import reference
from tests.data.stored import assert_stored_numbers
from tests.test_fast_path_equivalence import pair

N, W, R, K, L = 12, 4, 2, 3, 2
F64 = torch.float64
SATURATED = 100.0  # sigmoid(100) == 1 and oneplus(-100) == 1 in float64


def _sam(**options: Any) -> memfn.Memory:
    return memfn.sam(N, W, R, K, knn="exact", **options)


def _sdnc(**options: Any) -> memfn.Memory:
    return memfn.sdnc(N, W, R, K, L, knn="exact", **options)


def _run(mem: memfn.Memory, xis: torch.Tensor) -> tuple[list[torch.Tensor], Any]:
    state, reads = mem.init(F64), []
    for xi in xis:
        r, state = mem.step(state, xi)
        reads.append(r)
    return reads, state


def _assert_runs_close(a: tuple[Any, ...], b: tuple[Any, ...], atol: float) -> None:
    for x, y in zip(a[0], b[0]):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)
    assert a[1]._fields == b[1]._fields
    for name, x, y in zip(a[1]._fields, a[1], b[1]):
        torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=name)


# -- defaults: today's numbers ---------------------------------------------------------------------


def test_defaults_give_the_stored_numbers_of_sam_and_sdnc() -> None:
    assert_stored_numbers("sparse_reference.pt", reference())


def test_default_layouts_are_unchanged() -> None:
    sam, sdnc = _sam(), _sdnc()
    assert sam.interface_size == R * W + R + W + 2 and sam.interface_fields[-1][0] == "write_gate"
    assert sdnc.interface_size == sam.interface_size + 3 * R and sdnc.interface_fields[-1][0] == "read_modes"
    io = split_sdnc_interface(torch.zeros(sdnc.interface_size), R, W)
    assert io.read_masks is None and io.forward_sharpness is None and io.backward_sharpness is None
    assert split_sam_interface(torch.zeros(sam.interface_size), R, W).read_masks is None


def test_option_layouts() -> None:
    sam, sdnc = _sam(masking=True), _sdnc(masking=True, link_sharpness=True)
    assert sam.interface_fields[-1] == ("read_masks", R * W)
    assert [name for name, _ in sdnc.interface_fields[-4:]] == [
        "read_modes", "forward_sharpness", "backward_sharpness", "read_masks",
    ]  # fmt: skip
    assert sdnc.interface_size == _sdnc().interface_size + 2 * R + R * W
    assert _sdnc(link_sharpness=True).interface_size == _sdnc().interface_size + 2 * R


# -- masking ---------------------------------------------------------------------------------------


def test_masks_are_in_the_unit_interval() -> None:
    for mem, split in ((_sam(masking=True), split_sam_interface), (_sdnc(masking=True), split_sdnc_interface)):
        io = split(torch.randn(5, mem.interface_size, dtype=F64) * 20, R, W, masking=True)
        assert io.read_masks is not None and io.read_masks.shape == (5, R, W)
        assert ((io.read_masks >= 0) & (io.read_masks <= 1)).all()


def test_an_all_ones_mask_is_plain_cosine_and_plain_content_weights() -> None:
    keys, rows, ones = torch.randn(R, W, dtype=F64), torch.randn(R, K, W, dtype=F64), torch.ones(R, W, dtype=F64)
    plain = cosine_similarity(keys.unsqueeze(-2), rows).squeeze(-2)
    assert torch.equal(masked_cosine_similarity(keys, rows, ones), plain)
    positions, beta = torch.arange(R * K).reshape(R, K), 1 + torch.rand(R, dtype=F64)
    torch.testing.assert_close(
        S.sparse_content_weights(rows, keys, beta, positions, ones),
        S.sparse_content_weights(rows, keys, beta, positions),
        atol=1e-12,
        rtol=0,
    )


@pytest.mark.parametrize("make", [_sam, _sdnc], ids=["sam", "sdnc"])
def test_a_saturated_all_ones_mask_gives_the_plain_memory(make: Any) -> None:
    torch.manual_seed(0)
    plain, masked = make(), make(masking=True)
    xis = torch.randn(8, plain.interface_size, dtype=F64) * 2
    ones = torch.full((8, R * W), SATURATED, dtype=F64)
    _assert_runs_close(_run(plain, xis), _run(masked, torch.cat([xis, ones], -1)), atol=1e-12)


def test_with_every_cell_a_candidate_masked_sparse_reads_are_the_dense_masked_reads() -> None:
    torch.manual_seed(1)
    memory, keys = torch.randn(N, W, dtype=F64), torch.randn(R, W, dtype=F64)
    masks, beta = torch.rand(R, W, dtype=F64), 1 + 3 * torch.rand(R, dtype=F64)
    positions = nearest_cells(memory, keys * masks, N)  # K = N: nothing missed
    sparse = S.sparse_content_weights(S.gather_rows(memory, positions), keys, beta, positions, masks)
    dense = A.masked_content_weights(memory, keys, beta, masks)
    torch.testing.assert_close(sparse, dense.gather(-1, positions), atol=1e-14, rtol=0)


def test_the_candidates_may_miss_a_row_whose_masked_similarity_is_high() -> None:
    # The documented approximation: the search ranks unmasked rows against the masked key. Row 0
    # matches the key on the unmasked columns exactly but is large in the masked-out one.
    memory = torch.tensor([[1.0, 1.0, 100.0], [1.0, 0.5, 0.0], [-1.0, 0.0, 1.0]], dtype=F64)
    keys, masks = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64), torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    dense = A.masked_content_weights(memory, keys, torch.tensor([5.0], dtype=F64), masks)
    assert dense.argmax() == 0
    mem = memfn.sam(3, 3, 1, sparse_reads=1, knn="exact", masking=True)
    assert nearest_cells(memory, keys * masks, 1).tolist() == [[1]]  # row 0 is not a candidate
    # Row 2 is the least used (the write erases it); the write adds nothing (zero write vector).
    state = mem.init(F64)._replace(memory=memory, last_access=torch.tensor([5, 5, 0]))
    masks_xi = torch.tensor([SATURATED, SATURATED, -SATURATED], dtype=F64)  # masks (1, 1, 0)
    xi = torch.cat([keys[0], torch.zeros(1 + 3 + 1 + 1, dtype=F64), masks_xi])
    _, new = mem.step(state, xi)
    assert new.read_positions.tolist() == [[1]] and torch.equal(new.memory[:2], memory[:2])


# -- link sharpness --------------------------------------------------------------------------------


def _links(seed: int) -> tuple[Any, ...]:
    torch.manual_seed(seed)
    _, state = _run(_sdnc(), torch.randn(6, _sdnc().interface_size, dtype=F64) * 2)
    views = (state.link_positions, state.link_matrix, state.rev_link_positions, state.rev_link_matrix)
    modes = torch.softmax(torch.randn(R, 3, dtype=F64), -1)
    return (*views, state.read_positions, state.read_weights, modes, L)


def test_sharpness_one_is_plain_links_and_sharpness_keeps_the_mass() -> None:
    args = _links(2)
    plain_pos, plain = temporal_read_slots(*args)
    assert (plain > 0).any()
    ones = torch.ones(R, dtype=F64)
    pos, sharp = temporal_read_slots(*args, sharpness=(ones, ones))
    assert torch.equal(pos, plain_pos)
    torch.testing.assert_close(sharp, plain, atol=1e-12, rtol=0)
    three = torch.full((R,), 3.0, dtype=F64)
    pos, sharp = temporal_read_slots(*args, sharpness=(three, three))
    assert torch.equal(pos, plain_pos)
    torch.testing.assert_close(sharp[:, :L].sum(-1), plain[:, :L].sum(-1))  # backward slots' mass
    torch.testing.assert_close(sharp[:, L:].sum(-1), plain[:, L:].sum(-1))  # forward slots' mass
    assert ((sharp == 0) == (plain == 0)).all()


def test_a_saturated_unit_sharpness_gives_the_plain_sdnc() -> None:
    torch.manual_seed(3)
    plain, sharp = _sdnc(), _sdnc(link_sharpness=True)
    xis = torch.randn(8, plain.interface_size, dtype=F64) * 2
    ones = torch.full((8, 2 * R), -SATURATED, dtype=F64)  # oneplus(-100) == 1
    _assert_runs_close(_run(plain, xis), _run(sharp, torch.cat([xis, ones], -1)), atol=1e-12)
    # and a sharpness above 1 changes the temporal reads
    _, a = _run(plain, xis)
    _, b = _run(sharp, torch.cat([xis, torch.full((8, 2 * R), 3.0, dtype=F64)], -1))
    assert not torch.allclose(a.read_weights, b.read_weights)


# -- float64 gradients -----------------------------------------------------------------------------


def test_gradcheck_float64_masked_cosine_and_sharpened_temporal_reads() -> None:
    torch.manual_seed(4)
    keys, rows, masks = torch.randn(R, W, dtype=F64), torch.randn(R, K, W, dtype=F64), torch.rand(R, W, dtype=F64)
    assert torch.autograd.gradcheck(masked_cosine_similarity, tuple(t.requires_grad_() for t in (keys, rows, masks)))
    link_pos, link_val, rev_pos, rev_val, prev_pos, prev_w, modes, keep = _links(5)
    sharpness = [1 + torch.rand(R, dtype=F64) for _ in range(2)]

    def reads(prev_w: torch.Tensor, modes: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
        return temporal_read_slots(link_pos, link_val, rev_pos, rev_val, prev_pos, prev_w, modes, keep, (fwd, bwd))[1]

    inputs = tuple(t.clone().requires_grad_() for t in (prev_w, modes, *sharpness))
    assert torch.autograd.gradcheck(reads, inputs)


@pytest.mark.parametrize(
    "kind, options",
    [("sam", {"masking": True}), ("sdnc", {"masking": True}), ("sdnc", {"link_sharpness": True}),
     ("sdnc", {"masking": True, "link_sharpness": True})],
    ids=["sam-masking", "sdnc-masking", "sdnc-sharpness", "sdnc-both"],
)  # fmt: skip
def test_gradcheck_float64_whole_step(kind: str, options: dict[str, Any]) -> None:
    # As in tests/test_sparse.py: the read weighting is compared dense (slot order may change under
    # a perturbation); for the SDNC, L = N (nothing truncated) and the gates and the previous read
    # weights stay fixed: they move the links, through which no gradient passes (as in the paper).
    n, r, w = 6, 2, 3
    torch.manual_seed(6)
    if kind == "sam":
        mem = memfn.sam(n, w, r, 3, knn="exact", **options)
    else:
        mem = memfn.sdnc(n, w, r, 2, n, knn="exact", **options)
    _, state = _run(mem, torch.randn(4, mem.interface_size, dtype=F64) * 2)
    xi = torch.randn(mem.interface_size, dtype=F64)
    gates = slice(r * w + r + w, r * w + r + w + 2) if kind == "sdnc" else slice(0, 0)
    free = torch.cat([xi[: gates.start], xi[gates.stop :]]).requires_grad_()
    memory = (state.memory + 0.1 * torch.randn_like(state.memory)).requires_grad_()
    prev = state.read_weights.clone().requires_grad_(kind == "sam")

    def step(free: torch.Tensor, memory: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        full = torch.cat([free[: gates.start], xi[gates], free[gates.start :]])
        reads, new = mem.step(state._replace(memory=memory, read_weights=prev), full)
        return reads, new.memory, S.dense_weights(new.read_positions, new.read_weights, n)

    assert torch.autograd.gradcheck(step, (free, memory, prev))


# -- the fast path ---------------------------------------------------------------------------------

SHELL_OPTIONS = [(memfn.SAM, {"masking": True}), (memfn.SDNC, {"masking": True, "link_sharpness": True}),
                 (memfn.SDNC, {"link_sharpness": True})]  # fmt: skip
SHELL_IDS = ["SAM-masking", "SDNC-both", "SDNC-sharpness"]


@pytest.mark.parametrize("cls, options", SHELL_OPTIONS, ids=SHELL_IDS)
def test_the_fast_path_picks_the_pure_positions_and_writes_the_same_bits(cls: Any, options: dict[str, Any]) -> None:
    fast, pure = pair(cls, 0, debug=True, **options)
    assert fast.uses_fast_path() and not pure.uses_fast_path()
    x = torch.randn(2, 60, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_f, hid_f, dbg_f = fast(x)
        out_p, hid_p, dbg_p = pure(x)
    assert (dbg_f["read_positions"] == dbg_p["read_positions"]).all()
    assert torch.equal(out_f, out_p)
    for key in hid_p[1]:
        assert torch.equal(hid_f[1][key], hid_p[1][key]), key


@pytest.mark.parametrize("cls, options", SHELL_OPTIONS, ids=SHELL_IDS)
def test_the_fast_path_gradients_agree_in_float64(cls: Any, options: dict[str, Any]) -> None:
    fast, pure = pair(cls, 1, **options)
    fast, pure = fast.double(), pure.double()
    x = torch.randn(3, 20, 5, dtype=F64)
    fast(x)[0].square().sum().backward()
    pure(x)[0].square().sum().backward()
    for (name, pf), pp in zip(fast.named_parameters(), pure.parameters()):
        torch.testing.assert_close(pf.grad, pp.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_the_maintained_index_takes_masked_keys() -> None:
    rnn = memfn.SDNC(5, 8, nr_cells=200, cell_size=4, read_heads=2, sparse_reads=3, temporal_reads=2, knn="faiss",
                     index="ivf", masking=True, link_sharpness=True)  # fmt: skip
    assert rnn.uses_fast_path()
    out, (_, mhx, _) = rnn(torch.randn(2, 6, 5))
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in rnn.parameters())


# -- shells and task flags -------------------------------------------------------------------------


@pytest.mark.parametrize("independent", [False, True])
@pytest.mark.parametrize("cls, options", SHELL_OPTIONS, ids=SHELL_IDS)
def test_shells_take_the_options_and_run_forward_backward(cls: Any, options: dict[str, Any], independent: bool) -> None:
    sizes = dict(nr_cells=10, cell_size=4, read_heads=2, sparse_reads=3, knn="exact")
    if cls is memfn.SDNC:
        sizes["temporal_reads"] = 2
    rnn = cls(5, 8, **sizes, independent_linears=independent, **options)
    assert all(getattr(rnn, name) == value for name, value in options.items())
    assert rnn.pure_memory.interface_fields[-1][0] == ("read_masks" if options.get("masking") else "backward_sharpness")
    out, hidden = rnn(torch.randn(3, 4, 5))
    out2, _ = rnn(torch.randn(3, 2, 5), memfn.detach(hidden))
    (out.sum() + out2.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in rnn.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "cls, option",
    [(memfn.SAM, {"deallocation": True}), (memfn.SAM, {"write_heads": 2}), (memfn.SAM, {"link_sharpness": True}),
     (memfn.SDNC, {"deallocation": True}), (memfn.SDNC, {"write_heads": 2})],
    ids=str,
)  # fmt: skip
def test_shells_reject_the_options_that_do_not_apply(cls: Any, option: dict[str, Any]) -> None:
    # Not arguments of the sparse shells (no **kwargs): Python names the argument.
    with pytest.raises(TypeError, match=next(iter(option))):
        cls(5, 8, nr_cells=10, cell_size=4, read_heads=2, **option)
    factory = memfn.sam if cls is memfn.SAM else memfn.sdnc
    with pytest.raises(TypeError, match=next(iter(option))):
        factory(10, 4, 2, **option)


def _model(*argv: str) -> Any:
    args = build_parser("copy").parse_args(list(argv))
    args.task, args.output_size = "copy", args.input_size
    return build_model(args)


def test_task_flags_build_the_sparse_options() -> None:
    sam = _model("-memory_type", "sam", "-masking")
    assert isinstance(sam, memfn.SAM) and sam.masking
    sdnc = _model("-memory_type", "sdnc", "-masking", "-sharpness")
    assert isinstance(sdnc, memfn.SDNC) and sdnc.masking and sdnc.link_sharpness
    plain = _model("-memory_type", "sdnc")
    assert isinstance(plain, memfn.SDNC) and not plain.masking and not plain.link_sharpness


@pytest.mark.parametrize(
    "argv, message",
    [(["-memory_type", "sam", "-sharpness"], "-sharpness applies to -memory_type dnc and sdnc only, not sam"),
     (["-memory_type", "sam", "-deallocation"], "-deallocation applies to -memory_type dnc only, not sam"),
     (["-memory_type", "sdnc", "-write_heads", "2"], "-write_heads applies to -memory_type dnc only, not sdnc"),
     (["-memory_type", "sdnc", "-masking", "-deallocation"], "-deallocation applies")],
    ids=["sam-sharpness", "sam-deallocation", "sdnc-write_heads", "sdnc-deallocation"],
)  # fmt: skip
def test_task_flags_that_do_not_apply_are_a_user_error(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        _model(*argv)
