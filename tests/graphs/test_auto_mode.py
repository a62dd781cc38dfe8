"""`data.subgraph: auto` says the rule it applies, and the rule is the one it applies (issue 19 item 11: the console
said "computation trees are faster up to 50 %" where the docs said "always for GCN, SGC, SAGE and GIN")."""

from __future__ import annotations

import numpy as np
import torch

from cmlgraph.graphs import EpisodeSampler, from_arrays, load_graph
from cmlgraph.graphs.auto_mode import SGC_PLAN_RATIO, SUBGRAPH_RATIO, choose_mode, neighbourhood_work


def _graphs():
    dense = load_graph("synthetic", num_nodes=600, num_classes=12)  # a 2-hop neighbourhood covers most of it
    ring = from_arrays(np.stack([np.arange(600), (np.arange(600) + 1) % 600]), np.ones((600, 2)),
                       [i % 12 for i in range(600)], split="6/3/3")  # a 2-hop neighbourhood is a few nodes
    return [(g, EpisodeSampler(g.y, g.splits["train"], 2, 1, 3, torch.Generator())) for g in (dense, ring)]


def test_computation_trees_of_gcn_sage_gin_are_always_used_and_the_reason_says_so():
    for g, sampler in _graphs():
        for kind in ("gcn", "sage", "gin"):
            mode, why = choose_mode(g, sampler, hops=2, trees=True, threshold=20_000, kind=kind)
            assert mode == "khop" and "always" in why and "up to" not in why


def test_sgc_uses_trees_only_up_to_its_ratio_and_the_reason_names_it():
    modes = set()
    for g, sampler in _graphs():
        share = neighbourhood_work(g, sampler, 2) / (g.num_nodes + g.num_edges)
        mode, why = choose_mode(g, sampler, hops=2, trees=True, threshold=20_000, kind="sgc")
        assert mode == ("khop" if share <= SGC_PLAN_RATIO else "full")
        assert f"SGC's computation trees are faster only up to {SGC_PLAN_RATIO:.0%}" in why and "always" not in why
        modes.add(mode)
    assert modes == {"khop", "full"}  # both sides of the rule were seen


def test_gat_subgraphs_reason_names_their_ratio():
    g, sampler = _graphs()[0]
    _, why = choose_mode(g, sampler, hops=2, trees=False, threshold=20_000, kind="gat")
    assert "k-hop subgraphs (GAT" in why and f"up to {SUBGRAPH_RATIO:.0%}" in why
