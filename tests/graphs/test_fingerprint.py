"""A graph's fingerprint: equal for equal content whatever the feature layout, edge order or a save/load round
trip; different when edges, features, labels or the split differ."""

from __future__ import annotations

import torch

from cmlgraph.graphs import from_arrays, load_graph
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.fingerprint import graph_fingerprint


def _graph() -> FewShotGraph:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen) * (torch.rand(40, 6, generator=gen) > 0.5)
    return from_arrays(torch.randint(0, 40, (2, 120), generator=gen), x, torch.arange(40) % 4, name="fp",
                       split="2/1/1")


def _with(g: FewShotGraph, **changes) -> FewShotGraph:
    return FewShotGraph(**{"name": g.name, "x": g.x, "edge_index": g.edge_index, "y": g.y, "splits": g.splits,
                           **changes})


def test_equal_content_equal_fingerprint(tmp_path):
    g = _graph()
    fp = graph_fingerprint(g)
    assert fp.startswith("sha256:") and fp == graph_fingerprint(g)
    assert graph_fingerprint(_with(g, x=g.x.to_sparse_coo())) == fp
    assert graph_fingerprint(_with(g, x=g.x.to_sparse_csr())) == fp
    order = torch.randperm(g.edge_index.shape[1], generator=torch.Generator().manual_seed(1))
    assert graph_fingerprint(_with(g, edge_index=g.edge_index[:, order])) == fp
    g.save(tmp_path / "g.npz")
    assert graph_fingerprint(load_graph(str(tmp_path / "g.npz"))) == fp


def test_other_content_other_fingerprint():
    g = _graph()
    fp = graph_fingerprint(g)
    x = g.x.clone()
    x[3, 2] += 1e-6
    y = g.y.clone()
    y[[0, 1]] = y[[1, 0]]
    edges = g.edge_index.clone()
    edges[1, 0] = (edges[1, 0] + 1) % 40
    splits = {"train": g.splits["val"], "val": g.splits["train"], "test": g.splits["test"]}
    for other in (_with(g, x=x), _with(g, y=y), _with(g, edge_index=edges), _with(g, splits=splits)):
        assert graph_fingerprint(other) != fp
