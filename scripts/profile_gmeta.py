"""Where a G-Meta + CML meta-iteration spends its time (the `cmlgraph bench --domains gmeta` workload).

Prints, on Amazon-Computer (2-way 5-shot, 20 first-order inner steps, meta-batch 1, one torch thread):

1. the mean time of one per-episode layout of a task's support balls (``BallGCN._layout``, 20 layouts);
2. the mean meta-iteration time over whole cycles of the bench's 4-task pool;
3. the kernels side by side on one task's real sizes, forward + backward: the binary-feature tables against the
   dense ``X_U W₁ᵀ`` products, and the ball aggregation as ``embedding_bag`` against ``torch.sparse.mm`` on CSR
   (each the median of 20 alternating repetitions);
4. a ``torch.profiler`` table of the top operators over one cycle (with ``--profile``).

Usage (needs the data root; a few minutes on one core)::

    CMLGRAPH_DATA=../shared/datasets OMP_NUM_THREADS=1 python scripts/profile_gmeta.py [--profile]

Steps 1 and 2 use only the bench workload and ``BallGCN._layout``, so the script also runs on older commits of
cmlgraph for a before/after comparison (step 3 needs the current modules and is skipped where they are missing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _ms(fn) -> float:
    """Wall time of one call, in ms."""
    t = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler operator table")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from cmlgraph.backbones.gmeta import BallGCN
    from cmlgraph.bench.gmeta_workload import _domain, gmeta_workload
    from cmlgraph.graphs import load_graph
    from cmlgraph.graphs.balls import BallInput

    graph = load_graph("amazon-computers", None, allow_partial=True)
    dom = _domain(graph, "batched")
    index = dom.ball_index("cpu")
    pool = dom.sample("train", 4, torch.Generator().manual_seed(1))
    enc = BallGCN(graph.num_features)
    items = [BallInput(index, raw.support) for raw in pool]
    for it in items:
        enc._layout([it], {})  # balls cached, binary codes built
    times = []
    for _ in range(5):
        for it in items:
            t = time.perf_counter()
            enc._layout([it], {})
            times.append(time.perf_counter() - t)
    print(f"layout of a task's support balls: {1000 * statistics.fmean(times):.1f} ms (mean of {len(times)})")

    work = gmeta_workload(graph, "batched", "cpu")
    cycle = getattr(work, "cycle", 4)
    for _ in range(cycle):
        work.step()
    t = time.perf_counter()
    for _ in range(3 * cycle):
        work.step()
    print(f"meta-iteration: {1000 * (time.perf_counter() - t) / (3 * cycle):.1f} ms (mean of 3 cycles of {cycle})")

    try:
        from cmlgraph.backbones.binary_features import BinaryRows
        from cmlgraph.backbones.gnn_ops import RowScaledSymmetric
    except ImportError:
        print("kernels: skipped (this commit has no binary tables / RowScaledSymmetric)")
    else:
        memo = enc._layout([items[0]], {})
        xu_rows: BinaryRows = memo["XU"]
        xu = xu_rows.dense()
        u = xu.shape[0]
        w = torch.randn(graph.num_features, 16, requires_grad=True)
        g = torch.randn(u, 16)

        def tables() -> None:
            torch.autograd.grad(xu_rows.matmul(w), w, g)

        def dense() -> None:
            torch.autograd.grad(xu @ w, w, g)

        b: RowScaledSymmetric = memo["B"]
        r = b.shape[0]
        crow = torch.cat([b.offsets, torch.tensor([b.cols.numel()], dtype=b.offsets.dtype)])
        vals = b.row_scale.repeat_interleave((crow[1:] - crow[:-1]).long())
        csr = torch.sparse_csr_tensor(crow, b.cols, vals, (r, r))
        csr_t = csr.t().to_sparse_csr()
        y = torch.randn(r, 16, requires_grad=True)
        gy = torch.randn(r, 16)

        def bag() -> None:
            torch.autograd.grad(b.matmul(y), y, gy)

        def sparse_mm() -> None:  # forward and the backward product with a stored transpose
            torch.sparse.mm(csr, y.detach())
            torch.sparse.mm(csr_t, gy)

        kernels = (tables, dense, bag, sparse_mm)
        for fn in kernels:  # warm-up
            fn()
        ms = [[_ms(fn) for fn in kernels] for _ in range(20)]  # alternating repetitions
        t_tab, t_dense, t_bag, t_mm = (statistics.median(col) for col in zip(*ms, strict=True))
        print(f"X_U W1^T and X_U^T G ({u} x {graph.num_features}, 16 outputs): tables "
              f"{t_tab:.2f} ms, dense {t_dense:.2f} ms")
        print(f"ball aggregation B y and B^T g ({r} rows, {b.cols.numel()} entries, 16 columns): embedding_bag "
              f"{t_bag:.2f} ms, sparse.mm on CSR {t_mm:.2f} ms")

    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(cycle):
                work.step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
