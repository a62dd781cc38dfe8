"""Episode inputs: full graph, k-hop subgraphs (checked against BFS and PyG), sparse features stay sparse."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch_geometric.utils import k_hop_subgraph

from cmlgraph.errors import ConfigError
from cmlgraph.graphs import episode_input, from_arrays, make_synthetic


def _bfs(graph, nodes, hops):
    G = nx.Graph()
    G.add_nodes_from(range(graph.num_nodes))
    G.add_edges_from(graph.edge_index.t().tolist())
    out = set()
    for v in nodes:
        out |= set(nx.single_source_shortest_path_length(G, v, cutoff=hops))
    return out


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_k_hop_matches_bfs_and_pyg(hops: int) -> None:
    g = make_synthetic(num_nodes=400, num_classes=10, avg_degree=3, seed=1)
    nodes = torch.tensor([5, 17, 200, 5, 399])
    gi = episode_input(g, nodes, hops)
    subset = gi.cache["subset"]
    assert set(subset.tolist()) == _bfs(g, nodes.tolist(), hops)
    assert torch.equal(subset[gi.nodes], nodes)
    sub, ei, mapping, _ = k_hop_subgraph(nodes, hops, g.edge_index, relabel_nodes=True, num_nodes=g.num_nodes)
    assert torch.equal(sub, subset)
    key = lambda e: sorted(map(tuple, e.t().tolist()))  # noqa: E731
    assert key(ei) == key(gi.edge_index)
    assert torch.allclose(gi.x, g.x[subset])


def test_full_graph() -> None:
    g = make_synthetic(num_nodes=100, num_classes=5, seed=0)
    gi = episode_input(g, torch.tensor([3, 1]), None)
    assert gi.x is g.x and gi.edge_index is g.edge_index and gi.nodes.tolist() == [3, 1]
    gi.cache["norm"] = 1
    assert episode_input(g, torch.tensor([0]), None).cache["norm"] == 1  # shared across full-graph episodes
    assert "norm" not in episode_input(g, torch.tensor([0]), 1).cache


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_stays_sparse() -> None:
    x = torch.eye(6).to_sparse()
    g = from_arrays(torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]), x, [0, 0, 0, 1, 1, 1],
                    split={"train": [0], "test": [1]})
    gi = episode_input(g, torch.tensor([0]), 2)
    assert gi.x.layout == torch.sparse_coo
    assert torch.equal(gi.x.to_dense(), torch.eye(6)[:3])
    csr = g.x.to_sparse_csr()
    from cmlgraph.graphs.sparse import slice_rows

    idx = torch.tensor([4, 1, 1])
    assert torch.equal(slice_rows(csr, idx).to_dense(), torch.eye(6)[idx])


def test_bad_nodes() -> None:
    g = make_synthetic(num_nodes=50, num_classes=5, seed=0)
    with pytest.raises(ConfigError, match=r"must lie in \[0, 50\)"):
        episode_input(g, torch.tensor([50]), 1)
    with pytest.raises(ConfigError, match="hops=-1"):
        episode_input(g, torch.tensor([1]), -1)
