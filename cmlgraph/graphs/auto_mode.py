"""``data.subgraph: auto``: choose the faster exact execution mode of a graph's episodes.

Why: ``full`` runs every node and edge of the graph through the GNN at every pass; ``khop`` runs only what each
output depends on (the computation trees of the support and query nodes, a meta-batch's tasks batched together,
for GCN/SGC/SAGE/GIN; the k-hop subgraph around each episode for GAT, a meta-batch's subgraphs as one disjoint
union since session 29). Both give
the same numbers, so ``auto`` only has to pick the cheaper one. It compares the work of one pass, measured in
nodes plus edges: the whole graph's against the L-hop neighbourhood of a few probe episodes (an upper bound of
their computation trees, which shrink layer by layer). Above ``data.subgraph_threshold`` nodes ``khop`` is
always used (the whole graph at every pass would not fit in memory on large graphs).

Measured (``cmlgraph bench --graphs synthetic-2k --domains graph``, 2-layer GCN, 5-way 3-shot 10 queries,
meta-batch 4; README "Speed and memory"): computation trees are faster than the whole graph even when they cover
most of it (6.8x on the 2,000-node graph, 12x on the 10,000-node one), because layer by layer they shrink to the
output nodes and the tasks run batched. So GNN kinds with
computation trees use ``khop`` unless the probe neighbourhood is larger than :data:`PLAN_RATIO` × the graph
(never for a neighbourhood, which is a part of the graph: kept as a bound); GAT uses ``khop`` when the
neighbourhood is at most :data:`SUBGRAPH_RATIO` of the graph (its subgraph path has no batching to gain).
"""

from __future__ import annotations

import torch

from cmlgraph.graphs.episodes import EpisodeSampler
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.subgraph import k_hop_nodes

#: Computation trees (batched) win up to this fraction of the graph's nodes + edges per episode.
PLAN_RATIO = 1.0
#: SGC's whole-graph pass is one cached propagation and its tasks run as one batch (session 26), so its computation
#: trees win at no size: 0 (the whole graph below ``data.subgraph_threshold``). Measured in session 27 (default run,
#: 500 steps + 500 test tasks, same accuracy both ways): Cora (neighbourhood 13 % of the graph) 7.9 s whole graph
#: against 12.2 s trees, CiteSeer (13 %) 11.1 s against 19.8 s, Coauthor-CS (25 %) 68.9 s against 130.4 s; 20 steps
#: + 50 test tasks: Amazon-Photo (45 %) 10.1 s against 87.7 s. Until then this was 0.5, from a measurement before SGC's
#: whole-graph tasks were batched (Cora: trees 19.7 s, whole graph 27.2 s), and a seed whose Amazon-Photo
#: neighbourhood came to 45 % trained for 6 minutes instead of 5 seconds.
SGC_PLAN_RATIO = 0.0
#: k-hop subgraphs (GAT) win up to this fraction. Re-measured in session 30, once both modes batched a meta-batch's
#: tasks (CPU, one thread, alternated, whole `cmlgraph train --gnn gat --subgraph khop|full` command on the default
#: synthetic graph, k-hop against whole graph): neighbourhood 71 % (5-way 3-shot, 50 steps, 50 test tasks) 77.7 /
#: 79.3 s against 109.9 / 113.1 s; then 5-shot, 30 steps, 50 test tasks: 77 % (10 queries) 66.9 / 76.4 s against
#: 90.7 / 83.0 s; 85 % (15 queries) 77.5 / 71.2 s against 80.3 / 83.4 s; 90 % (20 queries) 109.1 / 89.8 s against
#: 91.5 / 83.3 s. So k-hop wins well past the 50 % measured when GAT ran task by task in both modes, and the two
#: cross between 85 % and 90 %: 0.85. Not measured on a GPU.
SUBGRAPH_RATIO = 0.85
#: Probe episodes drawn (with a private generator) to estimate the neighbourhood size.
PROBES = 4


def neighbourhood_work(graph: FewShotGraph, sampler: EpisodeSampler, hops: int, probes: int = PROBES) -> float:
    """Mean nodes + edges of the ``hops``-hop neighbourhood of a probe episode's support and query nodes."""
    generator = torch.Generator().manual_seed(0)  # private: the sampler's own stream is left as it is
    sizes = []
    for _ in range(probes):
        ep = sampler.sample(generator)
        subset, edges = k_hop_nodes(graph, torch.cat([ep.support, ep.query]), hops)
        sizes.append(subset.numel() + edges.shape[1])
    return sum(sizes) / len(sizes)


def choose_mode(graph: FewShotGraph, sampler: EpisodeSampler, *, hops: int, trees: bool,
                threshold: int, kind: str | None = None) -> tuple[str, str]:
    """The faster exact mode for ``graph``'s episodes and why: ``("khop" | "full", reason)``.

    Args:
        graph: The graph.
        sampler: The train split's episode sampler (its generator is left untouched).
        hops: Message-passing hops of the GNN.
        trees: Whether the GNN kind runs computation trees (batched); otherwise k-hop subgraphs.
        threshold: Above this many nodes ``khop`` is used without probing.
        kind: The GNN kind (``sgc`` uses :data:`SGC_PLAN_RATIO`).
    """
    if graph.num_nodes > threshold:
        return "khop", f"{graph.num_nodes:,} nodes > data.subgraph_threshold {threshold:,}"
    if trees and kind == "sgc" and SGC_PLAN_RATIO <= 0.0:  # no probe: the neighbourhood's size does not matter
        return "full", f"{graph.num_nodes:,} nodes <= data.subgraph_threshold {threshold:,}; {speed_rule(trees, kind)}"
    whole = graph.num_nodes + graph.num_edges
    work = neighbourhood_work(graph, sampler, hops)
    ratio = (SGC_PLAN_RATIO if kind == "sgc" else PLAN_RATIO) if trees else SUBGRAPH_RATIO
    mode = "khop" if work <= ratio * whole else "full"
    return mode, (f"an episode's {hops}-hop neighbourhood is {work / max(whole, 1):.0%} of the graph's nodes + "
                  f"edges; {speed_rule(trees, kind)}")


def speed_rule(trees: bool, kind: str | None = None) -> str:
    """The rule :func:`choose_mode` applies, in words (printed with its choice; the docs must say the same).

    Computation trees (GCN, SAGE, GIN) are used at any size below the threshold (:data:`PLAN_RATIO` 1: a
    neighbourhood is never larger than the graph); SGC's only up to :data:`SGC_PLAN_RATIO`; GAT's k-hop subgraphs
    up to :data:`SUBGRAPH_RATIO`.
    """
    ratio = (SGC_PLAN_RATIO if kind == "sgc" else PLAN_RATIO) if trees else SUBGRAPH_RATIO
    if trees and ratio >= 1.0:
        return ("computation trees are always used below data.subgraph_threshold (faster than the whole graph at any "
                "size for GCN, SAGE and GIN)")
    if trees and ratio <= 0.0:
        return ("SGC's whole graph is used below data.subgraph_threshold (one cached propagation, its tasks batched: "
                "faster than computation trees at every measured size)")
    if trees:
        return (f"SGC's computation trees are faster only up to {ratio:.0%} of the graph (its whole-graph pass is "
                f"one cached propagation)")
    return f"k-hop subgraphs (GAT) are faster up to {ratio:.0%} of the graph"


__all__ = ["PLAN_RATIO", "PROBES", "SGC_PLAN_RATIO", "SUBGRAPH_RATIO", "choose_mode", "neighbourhood_work",
           "speed_rule"]
