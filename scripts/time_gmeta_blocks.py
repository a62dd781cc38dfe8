"""Time G-Meta's ball encoder on T tasks with the shared union and with per-task feature blocks, side by side.

The first GCN layer projects either every member of the tasks' shared union with every task's weights
(``T · U`` rows) or each task's own members with its own weights (``Σ_t U_t`` rows, one block-diagonal product):
:func:`cmlgraph.backbones.gmeta.task_blocks_win` chooses on the CPU. This script forces each mode on the same random
tasks (T tasks of n centre nodes, drawn anew each repetition, modes alternated) and prints the median time of one
forward + backward pass of the encoder with per-task weights, the time to build the layout, and the rows projected.

Usage (one torch thread; the data root holds the graph):
    CMLGRAPH_DATA=../shared/datasets python scripts/time_gmeta_blocks.py citeseer --tasks 2 5 20 --nodes 20
    python scripts/time_gmeta_blocks.py synthetic --graph-nodes 50000 --tasks 2 5 20   # dense float features
    python scripts/time_gmeta_blocks.py random-binary --graph-nodes 3000 --degree 2 --tasks 100 500
``random-binary``: a random graph (``--degree`` edges a node on average) with 767 binary features a node, 35 % set
(Amazon-Computer's width and density), for the binary paths (per-task subset-sum tables, or floats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cmlgraph.backbones import gmeta
from cmlgraph.backbones.gmeta import BallGCN, ball_layout, feature_codes
from cmlgraph.domains.tlp_graph import TLPGraphDomain
from cmlgraph.graphs.balls import BallIndex, BallInput
from cmlgraph.graphs.registry import load_graph


def random_binary(nodes: int, degree: float, seed: int = 0) -> BallIndex:
    """The ``random-binary`` graph: ``nodes · degree / 2`` random undirected edges, 767 binary features (35 % set)."""
    gen = torch.Generator().manual_seed(seed)
    src, dst = (torch.randint(nodes, (int(nodes * degree / 2),), generator=gen) for _ in range(2))
    edges = torch.stack([src, dst])
    return BallIndex((torch.rand(nodes, 767, generator=gen) < 0.35).float(), torch.cat([edges, edges.flip(0)], 1))


def time_mode(enc: BallGCN, index, blocks: bool, tasks: int, nodes: int, reps: int, passes: int,
              gen: torch.Generator, chosen: list[bool]) -> list[tuple[float, float, int, str]]:
    """``(seconds a pass, seconds to lay out, rows projected, the features' kind)`` of ``reps`` random task batches
    in one mode; what
    :func:`~cmlgraph.backbones.gmeta.task_blocks_win` would have chosen for each batch is appended to ``chosen``."""
    original = gmeta.task_blocks_win
    gmeta.task_blocks_win = lambda *args: chosen.append(original(*args)) or blocks
    try:
        out = []
        for _ in range(reps):
            items = [BallInput(index, torch.randperm(index.num_nodes, generator=gen)[:nodes]) for _ in range(tasks)]
            t0 = time.perf_counter()
            lay = ball_layout(items, {})
            t1 = time.perf_counter()
            params = {k: v.detach().unsqueeze(0).repeat(tasks, *[1] * v.dim()).requires_grad_()
                      for k, v in enc.named_parameters()}
            for _ in range(passes):
                z = enc._forward_group(params, items, False, lay)
                torch.autograd.grad(z.square().sum(), list(params.values()))
            out.append(((time.perf_counter() - t1) / passes, t1 - t0, int(lay["shape"][2]),
                        type(lay["XU"]).__name__))
        return out
    finally:
        gmeta.task_blocks_win = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="registered graph name (citeseer, amazon-computers, ...)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5, 20], help="tasks run together")
    parser.add_argument("--nodes", type=int, default=20, help="centre nodes a task (support + query)")
    parser.add_argument("--reps", type=int, default=6, help="task batches per mode and round (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of union, blocks (alternated)")
    parser.add_argument("--graph-nodes", type=int, default=None,
                        help="nodes of the synthetic or random-binary graph (default: synthetic's own; 3,000)")
    parser.add_argument("--degree", type=float, default=2.0, help="random-binary: edges a node on average")
    parser.add_argument("--hidden", type=int, default=16, help="the GCN's width (16 in Table 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.graph == "random-binary":
        index = random_binary(args.graph_nodes or 3000, args.degree)
    else:
        options = {"num_nodes": args.graph_nodes, "num_classes": 60} if args.graph_nodes else {}
        dom = TLPGraphDomain(load_graph(args.graph, **options), 2, 5, 5, kind="gmeta", hidden=16, dropout=0.5)
        index = dom.ball_index("cpu")
    feature_codes(index)  # binary features: the CPU's subset-sum tables, as in training
    enc = BallGCN(int(index.x.shape[1]), hidden=args.hidden, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    for tasks in args.tasks:
        runs: dict[str, list[tuple[float, float, int, str]]] = {"union": [], "blocks": []}
        chosen: list[bool] = []
        for _ in range(args.rounds):
            for name in runs:
                runs[name] += time_mode(enc, index, name == "blocks", tasks, args.nodes, args.reps, 5, gen,
                                        chosen)[1:]
        rule = f"the rule chooses blocks for {sum(chosen)} of {len(chosen)} batches"
        for name, rows in runs.items():
            step, build = (statistics.median(r[i] for r in rows) * 1e3 for i in (0, 1))
            kinds = "/".join(sorted({r[3] for r in rows}))
            print(f"{args.graph} T={tasks} n={args.nodes} {name:6s} pass {step:8.2f} ms  layout {build:8.2f} ms  "
                  f"rows {statistics.median(r[2] for r in rows):9.0f}  {kinds}  ({rule})")


if __name__ == "__main__":
    main()
