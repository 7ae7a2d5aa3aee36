"""Measure memfn's numerical departures from the papers' exact formulas, side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/paper_differences.py     # about 80 s on one thread

(a) Dense DNC, float64. A pure ``memfn.dnc(N=32, W=16, R=4)`` memory is stepped for 100 steps on
interface vectors drawn from N(0, 1) (``--seeds`` rollouts), with the write vector scaled and the
strength logits shifted in some rows (small rows and sharp strengths are what make the cosine's
epsilon matter). At every step, on memfn's own state (so nothing accumulates), memfn's
``content_weights`` (cosine with ``COSINE_EPS = 1e-6`` inside both norms) and
``allocation_weights`` (usage clamped to ``[1e-6, 1]`` first) are compared with the exact formulas
(plain cosine, 0 for a zero row; no clamp): the write key on the memory before the write, the read
keys on the memory after it, the allocation on this step's usage. "reads, exact content" ("reads,
exact alloc") is the step's read vectors with that one rule swapped for the exact one. The table
gives the worst absolute difference of any entry over all steps and seeds, and the smallest
squared norm of a non-zero memory row at the worst content step. (a2) runs memfn's DNC and the
exact-formula DNC as two whole trajectories on the same inputs; (a3) shows which cell a fresh
memory allocates at each step, with gates that make the write pure allocation (write and
allocation gates 1, free gates 0: the paper then fills cells 0, 1, 2, ...) and with random gates.

(b) SDNC's L-sparse links. ``memfn.sdnc(N=64, W=16, R=2, K=4, L)`` for L in 2, 4, 8, 16 against
L = N (nothing truncated: the dense DNC link recursion) on the same 100 interface vectors
(N(0, 1)), reporting the read vectors and the forward / backward read weightings (mode-weighted,
dense). This is the paper's own approximation (links and temporal reads kept L-sparse) plus
memfn's: the two views of the links (rows of L and of L^T) are each kept L-sparse, and a row that
links to a rewritten cell is found through the other view, so an entry the other view dropped
misses that step's decay. The last table isolates memfn's part: from each step's previous views,
write and precedence (teacher-forced on the L < N rollout), the paper's update
``L' = top_L per row(D o L + w p^T)`` (and per column for L^T) against memfn's new view.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import memfn

# --------------------------------------------------------------------------------------------
# (a) the dense DNC: epsilons


def exact_content_weights(memory, keys, strengths):
    """``softmax(beta * cos)`` with the plain cosine (0 where a norm is 0): the paper's formula."""
    dot = keys @ memory.transpose(-1, -2)
    norms = keys.norm(dim=-1).unsqueeze(-1) * memory.norm(dim=-1).unsqueeze(-2)
    cos = torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))
    return torch.softmax(cos * strengths.unsqueeze(-1), dim=-1)


def exact_allocation_weights(u):
    """``a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]`` without the clamp (stable sort, as memfn)."""
    sorted_u, phi = torch.sort(u, dim=-1, stable=True)
    return torch.zeros_like(u).scatter(-1, phi, (1.0 - sorted_u) * memfn.exclusive_cumprod(sorted_u))


def dnc_step(state, xi, r, w, exact_content=False, exact_allocation=False):
    """One DNC step written out from memfn.addressing (as memfn.dnc's step), with either of the two
    rules swapped for its exact formula. Returns the reads, the new state and the allocation."""
    A = memfn.addressing
    content = exact_content_weights if exact_content else A.content_weights
    allocation = exact_allocation_weights if exact_allocation else A.allocation_weights
    io = memfn.split_dnc_interface(xi, r, w)
    u = A.usage(state.usage_vector, state.write_weights.squeeze(-2), A.retention(io.free_gates, state.read_weights))
    alloc = allocation(u)
    cw = content(state.memory, io.write_key, io.write_strength).squeeze(-2)
    ww = A.write_weights(cw, alloc, io.write_gate, io.allocation_gate)
    memory = A.updated_memory(state.memory, ww, io.erase_vector, io.write_vector)
    link = A.link_matrix(state.link_matrix.squeeze(-3), state.precedence.squeeze(-2), ww)
    prec = A.precedence(state.precedence.squeeze(-2), ww)
    cr = content(memory, io.read_keys, io.read_strengths)
    fwd, bwd = A.forward_backward_read_weights(link, state.read_weights)
    rw = A.read_weights(cr, fwd, bwd, io.read_modes)
    new = state._replace(
        memory=memory,
        link_matrix=link.unsqueeze(-3),
        precedence=prec.unsqueeze(-2),
        read_weights=rw,
        write_weights=ww.unsqueeze(-2),
        usage_vector=u,
    )
    return A.read_vectors(memory, rw), new, alloc


def dnc_inputs(size, steps, seed, r, w, write_scale=1.0, strength_shift=0.0):
    """``steps`` interface vectors ~ N(0, 1); the write vector scaled, the strength logits shifted."""
    xis = torch.randn(steps, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    # Layout: read keys R*W, read strengths R, write key W, write strength 1, erase W, write W, ...
    write = r * w + r + w + 1 + w
    xis[:, write : write + w] *= write_scale
    xis[:, r * w : r * w + r] += strength_shift
    xis[:, r * w + r + w] += strength_shift
    return xis


def same_state_deviation(n, w, r, steps, seed, **inputs):
    """Per step, from memfn's own state (nothing accumulates): memfn's content and allocation weights
    against the exact ones, and the step's reads with one exact rule swapped in against memfn's."""
    A = memfn.addressing
    mem = memfn.dnc(n, w, r)
    xis = dnc_inputs(mem.interface_size, steps, seed, r, w, **inputs)
    state = mem.init(dtype=torch.float64)
    worst = dict(content=0.0, alloc=0.0, reads_content=0.0, reads_alloc=0.0, min_sq=float("inf"))
    for xi in xis:
        io = memfn.split_dnc_interface(xi, r, w)
        u = A.usage(state.usage_vector, state.write_weights.squeeze(-2), A.retention(io.free_gates, state.read_weights))
        alloc = (A.allocation_weights(u) - exact_allocation_weights(u)).abs().max().item()
        before = state.memory
        d_write = A.content_weights(before, io.write_key, io.write_strength) - exact_content_weights(
            before, io.write_key, io.write_strength
        )
        reads_c = dnc_step(state, xi, r, w, exact_content=True)[0]
        reads_a = dnc_step(state, xi, r, w, exact_allocation=True)[0]
        reads, state = mem.step(state, xi)
        d_read = A.content_weights(state.memory, io.read_keys, io.read_strengths) - exact_content_weights(
            state.memory, io.read_keys, io.read_strengths
        )
        content = max(d_write.abs().max().item(), d_read.abs().max().item())
        if content > worst["content"]:  # what drives it: the smallest non-zero row
            sq = (state.memory * state.memory).sum(-1)
            worst["min_sq"] = sq[sq > 0].min().item()
        worst["content"] = max(worst["content"], content)
        worst["alloc"] = max(worst["alloc"], alloc)
        worst["reads_content"] = max(worst["reads_content"], (reads - reads_c).abs().max().item())
        worst["reads_alloc"] = max(worst["reads_alloc"], (reads - reads_a).abs().max().item())
    return worst


def trajectory_deviation(n, w, r, steps, seed, dtype):
    """memfn's DNC and the exact-formula DNC run side by side on the same inputs: reads and weights."""
    xis = dnc_inputs(memfn.dnc_interface_size(r, w), steps, seed, r, w).to(dtype)
    s_mem = s_ex = memfn.dnc(n, w, r).init(dtype=dtype)
    d_reads, d_ww = [], []
    for xi in xis:
        r_mem, s_mem, _ = dnc_step(s_mem, xi, r, w)
        r_ex, s_ex, _ = dnc_step(s_ex, xi, r, w, exact_content=True, exact_allocation=True)
        d_reads.append((r_mem - r_ex).abs().max().item())
        d_ww.append((s_mem.write_weights - s_ex.write_weights).abs().max().item())
    return d_reads, d_ww


def fill_order(n, w, r, dtype, exact, gates):
    """The cell the allocation picks (its argmax) at each of the first N steps of a fresh memory."""
    xis = dnc_inputs(memfn.dnc_interface_size(r, w), n, 0, r, w)
    free = r * w + r + 3 * w + 1  # free gates R, allocation gate 1, write gate 1
    if gates == "pure allocation":  # sigmoid(+-100) is exactly 1 or 0: write gate 1, allocation gate 1, free gates 0
        xis[:, free : free + r] = -100.0
        xis[:, free + r : free + r + 2] = 100.0
    state = memfn.dnc(n, w, r).init(dtype=dtype)
    picks = []
    for xi in xis:
        _, state, alloc = dnc_step(state, xi.to(dtype), r, w, exact_content=exact, exact_allocation=exact)
        ties = int((alloc == alloc.max()).sum())
        picks.append(f"{int(alloc.argmax())}" + ("*" if ties > 1 else ""))
    return picks


# --------------------------------------------------------------------------------------------
# (b) the SDNC: L-sparse links


def dense(positions, values, n):
    """A sparse weighting / view ``[..., P]`` as a dense ``[..., N]``."""
    return values.new_zeros(*values.shape[:-1], n).scatter_add(-1, positions, values)


def top_per_row(m, keep):
    vals, idx = torch.topk(m, keep, dim=-1)
    return torch.zeros_like(m).scatter(-1, idx, vals)


def paper_link_update(prev_view, a, b, w, keep):
    """``top_keep per row(D o V + a b^T)`` with ``D[i, j] = 1 - w[i] - w[j]`` (clamped at 0) and a zero diagonal."""
    decay = (1.0 - w.unsqueeze(-1) - w.unsqueeze(-2)).clamp_min(0.0)
    new = decay * prev_view + a.unsqueeze(-1) * b.unsqueeze(-2)
    new = new * (1.0 - torch.eye(new.shape[-1], dtype=new.dtype))
    return top_per_row(new, keep)


def sdnc_rollout(n, w, r, k, links, xis):
    mem = memfn.sdnc(n, w, r, sparse_reads=k, temporal_reads=links)
    state = mem.init(dtype=torch.float64)
    reads, fwd, bwd, states = [], [], [], [state]
    for xi in xis:
        out, state = mem.step(state, xi)
        pos, wts = state.read_positions, state.read_weights  # [R, 2L + K]: backward L, forward L, content K
        bwd.append(dense(pos[:, :links], wts[:, :links], n))
        fwd.append(dense(pos[:, links : 2 * links], wts[:, links : 2 * links], n))
        reads.append(out)
        states.append(state)
    return torch.stack(reads), torch.stack(fwd), torch.stack(bwd), states


def own_approximation(states, n, links):
    """memfn's views against the paper's top-L update from the same previous views (one step each),
    and against a teacher-forced top-L recursion carried over all steps (accumulated)."""
    one_step, carried = [], []
    ref_rows = ref_cols = torch.zeros(n, n, dtype=torch.float64)
    for prev, new in zip(states[:-1], states[1:]):
        ww = dense(new.write_positions, new.write_weights, n)
        p = dense(prev.precedence_positions, prev.precedence, n)
        rows = dense(new.link_positions, new.link_matrix, n)  # L_t, row i: cells written before i
        cols = dense(new.rev_link_positions, new.rev_link_matrix, n)  # L_t^T
        exp_rows = paper_link_update(dense(prev.link_positions, prev.link_matrix, n), ww, p, ww, links)
        exp_cols = paper_link_update(dense(prev.rev_link_positions, prev.rev_link_matrix, n), p, ww, ww, links)
        one_step.append(max((rows - exp_rows).abs().max().item(), (cols - exp_cols).abs().max().item()))
        ref_rows = paper_link_update(ref_rows, ww, p, ww, links)
        ref_cols = paper_link_update(ref_cols, p, ww, ww, links)
        carried.append(max((rows - ref_rows).abs().max().item(), (cols - ref_cols).abs().max().item()))
    return one_step, carried


# --------------------------------------------------------------------------------------------


def fmt(x):
    return f"{x:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="random rollouts per measurement")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    steps = args.steps
    n, w, r = 32, 16, 4

    print(f"(a) DNC N={n} W={w} R={r}, {steps} steps, xi ~ N(0, 1), float64; worst over {args.seeds} seeds")
    print("memfn's rule vs the exact one on the same state, each step (nothing accumulates)")
    print("write v x | strength logits | content w | reads, exact content | alloc w | reads, exact alloc | min |M_i|^2")
    for scale, shift in ((1.0, 0.0), (1.0, 5.0), (0.1, 0.0), (0.1, 5.0), (0.01, 0.0)):
        runs = [
            same_state_deviation(n, w, r, steps, s, write_scale=scale, strength_shift=shift) for s in range(args.seeds)
        ]
        worst = {key: max(x[key] for x in runs) for key in runs[0]}
        worst["min_sq"] = min(x["min_sq"] for x in runs)
        print(
            f"{scale:9} | {'+' + str(shift):>15} | {fmt(worst['content']):>9} | {fmt(worst['reads_content']):>20} |"
            f" {fmt(worst['alloc']):>7} | {fmt(worst['reads_alloc']):>18} | {fmt(worst['min_sq']):>11}"
        )

    print("\n(a2) whole DNCs, memfn's rules vs the exact ones, same inputs (xi ~ N(0, 1)), worst over seeds")
    print("dtype   | reads: step 1   step 10   step 100 | write weights: max over steps")
    for dtype in (torch.float64, torch.float32):
        per_seed = [trajectory_deviation(n, w, r, steps, seed, dtype) for seed in range(args.seeds)]
        at = [max(d[0][i] for d in per_seed) for i in (0, 9, steps - 1)]
        ww = max(max(d[1]) for d in per_seed)
        print(f"{str(dtype)[6:]:7} | {fmt(at[0]):>12} {fmt(at[1]):>9} {fmt(at[2]):>10} | {fmt(ww):>29}")

    print("\n(a3) fresh memory, N=8: the cell the allocation picks (argmax) at steps 1..8 (* = a tie)")
    for gates in ("pure allocation", "random gates"):
        for dtype in (torch.float64, torch.float32):
            for exact in (False, True):
                picks = fill_order(8, w, r, dtype, exact, gates)
                rule = "exact" if exact else "memfn"
                print(f"{gates:15} {str(dtype)[6:]:7} {rule:5}: {' '.join(picks)}")

    ns, ws, rs, ks = 64, 16, 2, 4
    print(f"\n(b) SDNC N={ns} W={ws} R={rs} K={ks}, {steps} steps, xi ~ N(0, 1), float64: L < N against L = N")
    results, scale = {}, []
    for seed in range(args.seeds):
        gen = torch.Generator().manual_seed(seed)
        size = memfn.sdnc(ns, ws, rs, sparse_reads=ks, temporal_reads=ns).interface_size
        xis = torch.randn(steps, size, generator=gen, dtype=torch.float64)
        full = sdnc_rollout(ns, ws, rs, ks, ns, xis)
        scale.append(full[0].abs().mean().item())
        for links in (2, 4, 8, 16):
            part = sdnc_rollout(ns, ws, rs, ks, links, xis)
            diffs = [(p - f).abs() for p, f in zip(part[:3], full[:3])]
            own = own_approximation(part[3], ns, links)
            results.setdefault(links, []).append((diffs, own))
    print(f"mean |read| at L = N: {statistics.mean(scale):.2f}")
    print("L  | reads: max   mean | forward w: max   mean | backward w: max   mean")
    for links, runs in results.items():
        cols = []
        for q in range(3):
            cols.append(max(d[0][q].max().item() for d in runs))
            cols.append(statistics.mean(d[0][q].mean().item() for d in runs))
        print(f"{links:2d} | {fmt(cols[0]):>10} {fmt(cols[1]):>7} | {fmt(cols[2]):>14} {fmt(cols[3]):>7} |"
              f" {fmt(cols[4]):>15} {fmt(cols[5]):>7}")  # fmt: skip

    print("\n(b2) memfn's own part: its link views against the paper's top-L update (teacher-forced)")
    print("L  | one step: max   median | carried 100 steps: max   at step 100")
    for links, runs in results.items():
        one = [x for _, (o, _) in runs for x in o]
        car = [x for _, (_, c) in runs for x in c]
        last = max(c[-1] for _, (_, c) in runs)
        print(f"{links:2d} | {fmt(max(one)):>13} {fmt(statistics.median(one)):>8} | {fmt(max(car)):>22} "
              f"{fmt(last):>11}")  # fmt: skip
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
