"""Time the host's preparation of meta-batches: what the trainer's prefetch worker must finish within a GPU step.

Prints, as JSON, the median milliseconds of (docs/gpu.md, "Host work per meta-batch"):

- ``khop-<gnn> ms/batch``: a k-hop meta-batch of the bench's setting (synthetic-10k, 5-way 3-shot, 10 queries,
  meta-batch 4, 2 layers) sampled and materialized on the CPU, its computation-tree plans built;
- ``build_plan support ms`` and ``build_plan query ms``: one plan of a support set (15 nodes) and of a query set
  (50 nodes) of that setting;
- ``gmeta ms/task``: one G-Meta task of the bench's setting (Amazon-Computer, 2-way 5-shot, 5 queries a class)
  materialized and its ball layout built (``TLPGraphDomain.prepare_batch``);
- ``gmeta block ms/side``: the ball block of one side of such a task (:meth:`cmlgraph.graphs.balls.BallIndex.block`);
- with ``--workers N`` (N > 1), also ``khop-gcn ms/batch, W build threads`` and ``gmeta ms/task, W build threads``
  for W = 1 and N: the same preparation through the trainer's :class:`~cmlgraph.train.prefetch.Prefetcher` with W
  build threads (``train.prefetch_workers``), wall time per item handed over, after a warm-up (a mean, so compare
  the two W with each other rather than with the medians above); and ``khop-gcn ms/batch, N build processes``,
  the k-hop plans built in N worker processes as the trainer builds them (:mod:`cmlgraph.train.build_processes`).

Usage (one torch thread; the G-Meta rows need Amazon-Computer under the data root, else they are left out, saying
so on stderr):
    OMP_NUM_THREADS=1 python scripts/time_host_prep.py --data-root ../shared/datasets [--workers 2]
To compare two versions of the code, run it with ``PYTHONPATH`` set to each version's tree (``git archive REV
cmlgraph | tar -x -C DIR``), alternating: a script's own folder, not the working directory, leads ``sys.path``, so
``PYTHONPATH`` wins over the installed checkout (unlike ``python -m cmlgraph ...`` run inside the repository).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def pooled_ms(draw: Callable[[Any], Any], build: Callable[[Any], Any], generator: torch.Generator | None,
              workers: int, items: int, host_build: Any = None) -> float:
    """Milliseconds per item handed over by a :class:`~cmlgraph.train.prefetch.Prefetcher` that draws with
    ``draw`` and builds with ``build`` in ``workers`` threads (or with ``host_build`` in ``workers`` processes):
    wall time over ``items`` items after ``2 * workers`` warm-up items (the pool full, processes started)."""
    from cmlgraph.train.prefetch import Prefetcher

    with Prefetcher(draw, generator, depth=2, name="cmlgraph-time", build=build, workers=workers,
                    host_build=host_build) as ahead:
        for _ in range(2 * workers):
            ahead.next()
        t = time.perf_counter()
        for _ in range(items):
            ahead.next()
        return round(1000 * (time.perf_counter() - t) / items, 3)


def khop(repeats: int, workers: int = 1) -> dict[str, float]:
    from cmlgraph.backbones.gnn import PLAN_AGGREGATION
    from cmlgraph.backbones.gnn_ops import adjacency_rows
    from cmlgraph.backbones.gnn_plan import build_plan
    from cmlgraph.bench.cases import GRAPHS
    from cmlgraph.bench.graphs import build_graph
    from cmlgraph.bench.workloads import GRAPH_SETTING
    from cmlgraph.domains.graph import GraphDomain

    graph, s, out = build_graph(GRAPHS["synthetic-10k"]), GRAPH_SETTING, {}
    for kind in ("gcn", "sgc"):
        dom = GraphDomain(graph, s["ways"], s["shots"], s["queries"], gnn=kind, hidden=s["hidden"],
                          layers=s["layers"], subgraph="khop")
        gen = torch.Generator().manual_seed(0)

        def produce(dom: GraphDomain = dom, gen: torch.Generator = gen) -> list[Any]:
            return [dom.materialize(r, "cpu") for r in dom.sample("train", s["meta_batch"], gen)]

        for _ in range(min(10, repeats)):  # warm-up: the graph's caches built, as after a run's first steps
            produce()
        out[f"khop-{kind} ms/batch"] = median_ms(produce, repeats)
        for w in (1, workers) if workers > 1 and kind == "gcn" else ():
            out[f"khop-gcn ms/batch, {w} build threads"] = pooled_ms(
                lambda g, dom=dom: dom.sample("train", s["meta_batch"], g),
                lambda raws, dom=dom: [dom.materialize(r, "cpu") for r in raws], gen, w, repeats)
        if workers > 1 and kind == "gcn":  # the trainer's choice for plans: build processes
            out[f"khop-gcn ms/batch, {workers} build processes"] = pooled_ms(
                lambda g, dom=dom: dom.sample("train", s["meta_batch"], g),
                lambda raws, dom=dom: [dom.materialize(r, "cpu") for r in raws], gen, workers, repeats,
                host_build=dom.host_build("cpu", workers))
        if kind == "gcn":
            ep = produce()[0]
            adj = adjacency_rows(ep.support_x, PLAN_AGGREGATION["gcn"])
            for side in ("support", "query"):
                nodes = getattr(ep, f"{side}_x").nodes
                out[f"build_plan {side} ms"] = median_ms(lambda n=nodes, a=adj: build_plan(a, graph.x, n, 2),
                                                       5 * repeats)
    return out


def gmeta(repeats: int, data_root: str | None, workers: int = 1) -> dict[str, float]:
    from cmlgraph.bench.gmeta_workload import _domain
    from cmlgraph.graphs import load_graph

    dom = _domain(load_graph("amazon-computers", data_root), "batched")
    pool = dom.sample("train", 8, torch.Generator().manual_seed(1))
    for raw in pool:  # every centre node's ball cached, as after a run's first steps
        dom.prepare_batch([dom.materialize(raw, "cpu")], None)
    index, turn = dom.ball_index("cpu"), [0]

    def task() -> None:
        dom.prepare_batch([dom.materialize(pool[turn[0] % len(pool)], "cpu")], None)
        turn[0] += 1

    def side() -> None:
        raw = pool[turn[0] % len(pool)]
        index.block(raw.support if turn[0] % 2 else raw.query)
        turn[0] += 1

    out = {"gmeta ms/task": median_ms(task, repeats), "gmeta block ms/side": median_ms(side, 2 * repeats)}
    drawn = itertools.count()

    def build(i: int) -> None:
        dom.prepare_batch([dom.materialize(pool[i % len(pool)], "cpu")], None)

    for w in (1, workers) if workers > 1 else ():
        out[f"gmeta ms/task, {w} build threads"] = pooled_ms(lambda _: next(drawn), build, None, w, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed k-hop batches per figure (one plan: 5x as many; G-Meta tasks: half, at least 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="also time the preparation through the trainer's prefetcher with this many build threads "
                             "(train.prefetch_workers; default 1: not timed)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding amazon_computers/ (default: $CMLGRAPH_DATA); without it, no G-Meta rows")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be >= 1")
    torch.set_num_threads(args.threads)
    out = khop(args.repeats, args.workers)
    from cmlgraph.errors import DataError

    try:
        out.update(gmeta(max(4, args.repeats // 2), args.data_root, args.workers))
    except DataError as exc:  # the data is missing: the k-hop figures stand
        print(f"time_host_prep: G-Meta not timed: Amazon-Computer was not found ({type(exc).__name__}); "
              "pass --data-root", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
