"""The synthetic contextual SBM: deterministic, many classes, homophilous, learnable."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.graphs import fixed_episodes, load_graph, make_synthetic


def test_deterministic_and_default_shape() -> None:
    a, b = load_graph("synthetic", seed=3), load_graph("synthetic", seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    assert a.splits == b.splits
    c = load_graph("synthetic", seed=4)
    assert not torch.equal(a.edge_index, c.edge_index)
    assert a.num_nodes == 3000 and a.num_classes >= 50 and a.num_features == 64
    assert [len(a.splits[k]) for k in ("train", "val", "test")] == [36, 12, 12]
    assert 8 <= a.num_edges / a.num_nodes <= 11  # average degree ~10


def test_homophily_and_learnability() -> None:
    g = make_synthetic(seed=0)
    assert g.homophily() > 10 / g.num_classes
    # Two rounds of neighbour averaging make 5-way 3-shot prototypes clearly better than chance and than raw features.
    n = g.num_nodes
    adj = torch.sparse_coo_tensor(g.edge_index, torch.ones(g.num_edges), (n, n), check_invariants=False)
    deg = torch.bincount(g.edge_index[0], minlength=n).float().unsqueeze(1) + 1
    agg = g.x
    for _ in range(2):
        agg = (torch.sparse.mm(adj, agg) + agg) / deg

    def acc(x):
        eps = fixed_episodes(g.y, g.splits["test"], 5, 3, 5, 100, 0)
        hits = [(torch.cdist(x[e.query], x[e.support].view(5, 3, -1).mean(1)).argmin(1) == e.query_y).float().mean()
                for e in eps]
        return float(torch.stack(hits).mean())

    raw, smooth = acc(g.x), acc(agg)
    assert 0.22 < raw < 0.6 and smooth > raw + 0.15


def test_options_via_load_graph() -> None:
    g = load_graph("synthetic", num_nodes=600, num_classes=None, seed=2)
    assert g.num_nodes == 600 and g.num_classes == 60
    with pytest.raises(ConfigError, match=r"unknown options \['nodes'\]"):
        load_graph("synthetic", nodes=5)


def test_large_options() -> None:
    g = make_synthetic(num_nodes=20000, num_classes=100, num_edges=100000, num_features=8, seed=1)
    assert g.num_nodes == 20000 and g.num_classes == 100 and 190000 <= g.num_edges <= 200000
