"""GAT's k-hop subgraph unions padded to fixed capacities (issue 18 item 4): the padded union pass equals the
unpadded one in values and gradients (dense and sparse features), a refilled union holds nothing of an earlier
batch, the refill issues no device sync, and what does not fit is refused."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones import plan_static
from cmlgraph.backbones.gnn import STATIC_BATCH_KEY, GNNBackbone
from cmlgraph.backbones.gnn_ops import self_loop_edge_index
from cmlgraph.backbones.union_static import StaticUnion, UnionCapacity, union_needs
from cmlgraph.graphs.types import GraphBatch, GraphInput
from cmlgraph.train.sync_counter import SyncCounter
from tests.backbones.test_gnn_plan import _graph, _subgraph_input, _task_weights


def _items(x, ei, tasks: int, seed: int, nodes: int = 5) -> list[GraphInput]:
    g = torch.Generator().manual_seed(seed)
    return [_subgraph_input(x, ei, torch.randperm(x.shape[0], generator=g)[:nodes]) for _ in range(tasks)]


def _fixed(items: list[GraphInput]) -> list[GraphInput]:
    """Inputs standing for a capture's fixed ones (the padded union installed on them)."""
    return [GraphInput(g.x, g.edge_index, g.nodes.clone(), dict(g.cache), subgraph=True) for g in items]


def _pass(net, params, items, union=None):
    if union is not None:
        items[0].__dict__[STATIC_BATCH_KEY] = (tuple(id(g) for g in items), union)
    out = net.forward_tasks(params, GraphBatch(items))
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + out.pow(2).sum()
    return out.detach(), torch.autograd.grad(loss, list(params.values()))


@pytest.mark.parametrize("sparse", [False, True])
def test_the_padded_union_pass_equals_the_unpadded_one_and_refills_cleanly(sparse):
    x, ei = _graph(sparse=sparse, seed=21)
    torch.manual_seed(21)
    net = GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2).double()
    params = {k: v.requires_grad_() for k, v in _task_weights(net, 3).items()}
    by_size = sorted(_items(x, ei, 12, seed=1, nodes=2), key=lambda g: g.num_nodes)
    small, large = by_size[:3], by_size[-3:]
    assert max(g.num_nodes for g in small) < max(g.num_nodes for g in large)
    union = StaticUnion(large)  # capacities from the large batch, then refilled with the small one
    assert union.holds(small) and union.holds(large)
    for items in (large, small, large):
        ref_out, ref_grads = _pass(net, params, items)
        fixed = _fixed(items)
        union.fill(items)
        out, grads = _pass(net, params, fixed, union)
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)
    lay = union.layout
    rows = union.capacity.rows
    assert lay["x"].shape == (3, rows, x.shape[1]) and lay["edges"].shape == (2, union.capacity.edges)
    # what the last refill left: pad rows zero, pad edges a pad row to itself, real edges only within their task
    edges = lay["edges"]
    real = sum(int(self_loop_edge_index(g).shape[1]) for g in large)
    pad = edges[:, real:]
    assert pad.shape[1] > 0 and torch.equal(pad[0], pad[1])
    for t, g in enumerate(large):
        assert torch.all(lay["x"][t, g.num_nodes:] == 0)
        in_pad = (pad[0] >= t * rows + g.num_nodes) & (pad[0] < (t + 1) * rows)
        block = (edges[:, :real] >= t * rows) & (edges[:, :real] < t * rows + g.num_nodes)
        assert torch.equal(block[0], block[1])  # an edge's ends are real rows of one task
        assert int(in_pad.sum()) > 0 or g.num_nodes == rows - 1
    assert torch.all(torch.isin(pad[0], torch.cat([torch.arange(t * rows + g.num_nodes, (t + 1) * rows)
                                                   for t, g in enumerate(large)])))


def test_refilling_issues_no_device_sync_and_capacities_grow():
    x = torch.randn(200, 6, dtype=torch.float64)
    ring = torch.stack([torch.arange(200), (torch.arange(200) + 1) % 200])
    ei = torch.cat([ring, ring.flip(0)], 1)  # a ring: a node's 2-hop subgraph has 5 nodes
    items = _items(x, ei, 3, seed=3, nodes=1)
    for g in items:
        self_loop_edge_index(g)  # built on the host with the episode (the domain's materialize)
    union = StaticUnion(items)
    with SyncCounter() as counter:
        union.fill(items)
    assert counter.total == 0, counter.counts
    need = union_needs(items)
    assert need.rows == max(g.num_nodes for g in items) + 1  # one pad row a task at least
    assert union.capacity.rows >= need.rows and union.capacity.edges >= need.edges
    big = _items(x, ei, 3, seed=4, nodes=6)
    assert max(b.num_nodes for b in big) > union.capacity.rows
    assert not union.holds(big) and not union.holds(items[:2])  # larger subgraphs; another task count
    grown = union.capacity.grown(union_needs(big))
    assert grown.rows >= union_needs(big).rows and grown.edges >= union_needs(big).edges
    assert StaticUnion(big, union.capacity).capacity == grown
    assert UnionCapacity(5, 7).grown(UnionCapacity(4, 6)) == UnionCapacity(5, 7)


def test_a_union_too_wide_to_pad_is_refused(monkeypatch):
    x, ei = _graph(seed=23)
    monkeypatch.setattr(plan_static, "MAX_FEATURE_BYTES", 64)
    with pytest.raises(ValueError, match="too wide to pad"):
        StaticUnion(_items(x, ei, 2, seed=5))
