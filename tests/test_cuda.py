"""CUDA: memfn.DNC, SAM and SDNC on a GPU give the CPU's numbers, the compiled step equals eager,
the faiss GPU search runs, and the hidden state stays on the device.

Every test is marked ``cuda`` and skips at once without CUDA (CI and the default run have none);
select them on a GPU machine with ``pytest -m cuda tests/test_cuda.py`` (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import optree
import pytest
import torch

import memfn
from memfn import DNC, SAM, SDNC

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine: gpu_check.sh)"),
]

I, H, N, W, R, K, L = 6, 12, 24, 4, 2, 3, 2
B, T = 3, 5
CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


def build(cls, device, **kwargs):
    sizes = {"nr_cells": N, "cell_size": W, "read_heads": R}
    if cls is not DNC:
        sizes["sparse_reads"] = K
    if cls is SDNC:
        sizes["temporal_reads"] = L
    return cls(I, H, num_layers=2, **{**sizes, **kwargs}, device=device)


def to(tree, device):
    return optree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def leaves_on(tree, device) -> bool:
    return all(t.device == device for t in optree.tree_leaves(tree) if isinstance(t, torch.Tensor))


def assert_trees_close(a, b, atol, rtol):
    la, lb = optree.tree_leaves(a), optree.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        if isinstance(u, torch.Tensor):
            torch.testing.assert_close(u.cpu(), v.cpu(), atol=atol, rtol=rtol)


def primed_hidden(rnn, x):
    """A hidden state with a random memory: a zero memory is all ties for the sparse shells' top-k,
    and CPU and CUDA ``torch.topk`` may break ties differently."""
    with torch.no_grad():
        _, (chx, mhx, rv) = rnn(x)
    prime = lambda m: {**m, "memory": torch.randn_like(m["memory"])}  # noqa: E731
    mhx = [prime(m) for m in mhx] if isinstance(mhx, list) else prime(mhx)
    return chx, mhx, rv


@pytest.mark.parametrize("cls", [DNC, SAM, SDNC], ids=["DNC", "SAM", "SDNC"])
def test_forward_and_backward_on_cuda_equal_the_cpu_in_float64(cls):
    cpu = build(cls, CPU).double()
    gpu = build(cls, CUDA).double()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)
    hidden = primed_hidden(cpu, x) if cls is not DNC else None
    results = []
    for rnn, device in ((cpu, CPU), (gpu, CUDA)):
        out, hid = rnn(x.to(device), memfn.clone(to(hidden, device)) if hidden is not None else None)
        assert out.device == device and leaves_on(hid, device)
        out.square().sum().backward()
        results.append((out, hid, [p.grad for p in rnn.parameters()]))
    (out_c, hid_c, grads_c), (out_g, hid_g, grads_g) = results
    torch.testing.assert_close(out_g.cpu(), out_c, atol=1e-9, rtol=1e-9)
    assert_trees_close(hid_g, hid_c, atol=1e-9, rtol=1e-9)
    for (name, _), gc, gg in zip(cpu.named_parameters(), grads_c, grads_g):
        torch.testing.assert_close(gg.cpu(), gc, atol=1e-9, rtol=1e-8, msg=name)


@pytest.mark.parametrize("cls", [DNC, SAM, SDNC], ids=["DNC", "SAM", "SDNC"])
def test_the_hidden_state_stays_on_the_device_across_calls(cls):
    rnn = build(cls, CUDA)
    x = torch.randn(B, T, I, device=CUDA)
    out, hid = rnn(x)
    assert leaves_on(hid, CUDA)
    out, hid = rnn(x, hid)
    assert out.device == CUDA and leaves_on(hid, CUDA)
    assert leaves_on(memfn.detach(hid), CUDA)
    assert all(p.device == CUDA for p in rnn.parameters())


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch.compiler.set_stance needs torch >= 2.6")
# Dynamo probes `.grad` of the (non-leaf) state tensors while tracing backward (see test_modules.py).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_compiled_dnc_step_on_cuda_equals_eager_on_cuda():
    eager = build(DNC, CUDA)
    compiled = build(DNC, CUDA, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(B, T, I, device=CUDA)
    results = []
    for model in (eager, compiled):
        out, hid = model(x)
        memories = hid[1] if isinstance(hid[1], list) else [hid[1]]
        (out.square().sum() + sum(m["memory"].sum() for m in memories)).backward()
        results.append((out.detach(), hid))
    (out_e, hid_e), (out_c, hid_c) = results
    torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
    assert out_c.device == CUDA and leaves_on(hid_c, CUDA)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.compiler.set_stance("fail_on_recompile"):
        out, hid = compiled(torch.randn(B, 3, I, device=CUDA), memfn.detach(hid_c))
    assert out.device == CUDA and leaves_on(hid, CUDA)


def _faiss_gpu():
    try:
        import faiss
    except ImportError:
        return None
    return faiss if hasattr(faiss, "StandardGpuResources") else None


@pytest.mark.parametrize("cls", [SAM, SDNC], ids=["SAM", "SDNC"])
def test_faiss_search_on_cuda_matches_exact_where_no_ties(cls):
    if _faiss_gpu() is None:
        pytest.skip("needs faiss-gpu (faiss with StandardGpuResources)")
    exact = build(cls, CUDA)
    flat = build(cls, CUDA, knn="faiss")
    flat.load_state_dict(exact.state_dict())
    x = torch.randn(B, T, I, device=CUDA)
    hidden = primed_hidden(exact, x)
    out_e, hid_e = exact(x[:, :1], memfn.clone(hidden))
    out_f, hid_f = flat(x[:, :1], hidden)
    torch.testing.assert_close(out_f, out_e)
    assert out_f.device == CUDA and leaves_on(hid_f, CUDA)
