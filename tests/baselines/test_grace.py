"""GRACE pretraining for gcl-probe: its loss by hand, and no label anywhere (permuting labels changes nothing)."""

from __future__ import annotations

import dataclasses

import torch

from cmlgraph.algorithms.baselines import GCLProbe
from cmlgraph.baselines.grace import GraceEncoder, GraceSettings, grace_loss, pretrain_grace
from cmlgraph.config import AlgoConfig
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.graphs import load_graph

SMALL = GraceSettings(hidden=8, proj=8, tau=0.5)


def test_loss_equals_the_infonce_formula() -> None:
    torch.manual_seed(0)
    model = GraceEncoder(5, 4, 3)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    h1 = torch.nn.functional.normalize(model.project(z1), dim=1)
    h2 = torch.nn.functional.normalize(model.project(z2), dim=1)

    def semi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # written out node by node
        out = []
        for i in range(a.shape[0]):
            pos = torch.exp(a[i] @ b[i] / 0.5)
            neg = sum(torch.exp(a[i] @ b[j] / 0.5) for j in range(a.shape[0])) + sum(
                torch.exp(a[i] @ a[j] / 0.5) for j in range(a.shape[0]) if j != i)
            out.append(-torch.log(pos / neg))
        return torch.stack(out)

    hand = 0.5 * (semi(h1, h2) + semi(h2, h1)).mean()
    assert torch.allclose(grace_loss(model, z1, z2, 0.5), hand, atol=1e-6)


def test_same_seed_same_encoder_and_global_rng_untouched() -> None:
    g = load_graph("synthetic", num_nodes=120, num_classes=6)
    state = torch.get_rng_state()
    a, _ = pretrain_grace(g.x, g.edge_index, SMALL, epochs=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = pretrain_grace(g.x, g.edge_index, SMALL, epochs=3, seed=5)
    c, _ = pretrain_grace(g.x, g.edge_index, SMALL, epochs=3, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_pretraining_uses_no_labels() -> None:
    """gcl-probe's pretraining through the algorithm on a graph and on the same graph with every label permuted
    (and the class split changed with them): identical encoder weights and embeddings (same seed)."""
    g = load_graph("synthetic", num_nodes=150, num_classes=6)
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(g, y=g.y[perm].clone(), full_graph_cache={})
    assert not torch.equal(shuffled.y, g.y)
    outs = []
    for graph in (g, shuffled):
        domain = GraphDomain(graph, 2, 1, 1, episodes=False)
        algo = GCLProbe(AlgoConfig(algo="gcl-probe", cml=False, pretrain_epochs=3), seed=0)
        holder = torch.nn.Module()
        algo.prepare(holder)
        inp = domain.node_input(torch.arange(graph.num_nodes))
        algo.pretrain(holder, inp, graph.name, seed=0)
        with torch.no_grad():
            outs.append((holder.baseline.encoder.state_dict(), holder.baseline.encoder(inp.x.to_dense()
                                                                                      if inp.x.is_sparse else inp.x,
                                                                                      inp.edge_index)))
    (s1, e1), (s2, e2) = outs
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert torch.equal(e1, e2)


def test_the_sparse_adjacency_path_equals_the_edge_path(monkeypatch) -> None:
    """Large graphs propagate with a transposed CSR adjacency (fast), small ones with edge_index: the same
    embeddings up to float rounding, directed edges included; repeated edges and self-loops keep edge_index."""
    from torch_geometric.utils import coalesce, remove_self_loops

    import cmlgraph.baselines.grace as grace

    g = torch.Generator().manual_seed(3)
    x = (torch.rand(30, 12, generator=g) < 0.2).float().to_sparse_coo()
    raw = torch.randint(0, 30, (2, 80), generator=g)  # directed, with repeats and self-loops
    ei = coalesce(remove_self_loops(raw)[0], num_nodes=30)
    assert grace.graph_operand(ei, 30) is ei  # below ADJACENCY_MIN_NODES
    torch.manual_seed(0)
    enc = grace.GraceEncoder(12, 8, 8)
    small = grace.embeddings(enc, x, ei)
    monkeypatch.setattr(grace, "ADJACENCY_MIN_NODES", 10)
    adj = grace.graph_operand(ei, 30)
    assert adj.layout == torch.sparse_csr and adj.shape == (30, 30)
    assert grace.graph_operand(raw, 30) is raw  # repeats / self-loops: the edge path
    torch.testing.assert_close(grace.embeddings(enc, x, ei), small, rtol=1e-5, atol=1e-6)
