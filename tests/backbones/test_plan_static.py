"""Padded static computation-tree layouts (issue 18 item 4): the padded pass equals the unpadded one in values and
gradients for every plan kind (dense and sparse features, one task and several, input dropout's path), refilled
buffers hold nothing of an earlier batch, and what does not fit is refused."""

from __future__ import annotations

import pytest
import torch

import cmlgraph.backbones.gnn as gnn_module
from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.backbones.gnn_ops import IndexAggregation
from cmlgraph.backbones.gnn_plan import TaskLayout, plan_constant
from cmlgraph.backbones.plan_static import PlanCapacity, PlanReads, StaticTaskLayout, plan_needs
from cmlgraph.graphs.types import GraphInput
from cmlgraph.train.sync_counter import SyncCounter


def _graph(n: int = 70, sparse: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(n, (160,), generator=g), torch.randint(n, (160,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    x = torch.randn(n, 9, generator=g)
    if sparse:  # bag-of-words-like, kept sparse (CiteSeer's layout)
        x = (x * (torch.rand(n, 9, generator=g) < 0.25)).to_sparse_csr()
    return x, torch.cat([ei, ei.flip(0)], 1), {}


def _items(graph: tuple, tasks: int, seed: int, nodes: int = 6, dup: bool = False) -> list[GraphInput]:
    x, ei, cache = graph
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(tasks):
        ids = torch.randperm(x.shape[0], generator=g)[:nodes]
        if dup:  # a node requested twice: the plan's output positions are not the identity
            ids[-1] = ids[0]
        out.append(GraphInput(x, ei, ids, cache, local=True))
    return out


def _params(enc: GNNBackbone, tasks: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: (v.detach().unsqueeze(0).repeat(tasks, *[1] * v.dim()) + 0.1 * torch.randn(tasks, *v.shape)
                ).requires_grad_() for k, v in enc._weights().items()}


def _pass(enc: GNNBackbone, params: dict[str, torch.Tensor], lay) -> tuple:
    """Embeddings through the layout ``lay``, and the gradients of a fixed loss of them."""
    out = enc._forward_plan(params, lay)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + out.pow(2).sum()
    return out.detach(), torch.autograd.grad(loss, list(params.values()))


def _assert_same_pass(enc, params, lay, static) -> None:
    out, grads = _pass(enc, params, lay)
    out_s, grads_s = _pass(enc, params, static)
    torch.testing.assert_close(out_s, out, rtol=1e-5, atol=1e-5)
    for g, g_s in zip(grads, grads_s, strict=True):
        torch.testing.assert_close(g_s, g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["sgc", "gcn", "sage", "gin"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("tasks", [1, 3])
def test_the_padded_pass_equals_the_unpadded_one_in_values_and_gradients(kind, sparse, tasks):
    graph = _graph(sparse=sparse)
    enc = GNNBackbone(kind, 9, hidden=5, layers=2, dropout=0.0)
    items = _items(graph, tasks, seed=2, dup=True)
    plans = [enc.plan(g) for g in items]
    reads = enc.plan_reads()
    static = StaticTaskLayout(plans, reads)
    unpadded = TaskLayout(plans).sizes
    for level in reads.levels | {len(unpadded) - 1}:  # the levels read: padded (unread ones hold nothing)
        assert static.sizes[level] >= unpadded[level] > 0
    _assert_same_pass(enc, _params(enc, tasks), TaskLayout(plans), static)


@pytest.mark.parametrize("kind", ["gcn", "sage", "gin"])
def test_input_dropouts_path_reads_the_padded_input_level(kind, monkeypatch):
    """Training with dropout reads the input level and every layer's aggregation; the masks themselves are drawn
    on the padded shapes, so they are replaced by the identity here to compare values."""
    monkeypatch.setattr(gnn_module, "feature_dropout", lambda x, p, training: x)
    graph = _graph(seed=3)
    enc = GNNBackbone(kind, 9, hidden=5, layers=2, dropout=0.5).train()
    reads = enc.plan_reads()
    assert reads.complete and reads.layers == (0, 1) and reads.constants == (("x", 0),)
    items = _items(graph, 3, seed=4)
    plans = [enc.plan(g) for g in items]
    static = StaticTaskLayout(plans, reads)
    _assert_same_pass(enc, _params(enc, 3), TaskLayout(plans), static)


def test_refilled_buffers_equal_a_fresh_layout_and_hold_nothing_of_the_earlier_batch():
    graph = _graph(seed=5)
    enc = GNNBackbone("gcn", 9, hidden=5, layers=3, dropout=0.0)
    big = [enc.plan(g) for g in _items(graph, 3, seed=6, nodes=12)]
    small = [enc.plan(g) for g in _items(graph, 3, seed=7, nodes=12)]
    reads = enc.plan_reads()
    zero = PlanCapacity((0, 0, 0, 0), (0, 0, 0))
    cap = zero.grown(plan_needs(big, reads)).grown(plan_needs(small, reads))  # either, with slack to spare
    static = StaticTaskLayout(big, reads, cap)
    static.fill(small)
    fresh = StaticTaskLayout(small, reads, cap)
    assert static.capacity == fresh.capacity == cap
    params = _params(enc, 3)
    _assert_same_pass(enc, params, TaskLayout(small), static)
    for i, agg in static.aggs.items():  # same buffers, entry for entry (the earlier batch's entries overwritten)
        for part in ("rows", "cols", "vals"):
            torch.testing.assert_close(getattr(agg, part), getattr(fresh.aggs[i], part))
    for key, buf in static.constants.items():
        torch.testing.assert_close(buf, fresh.constants[key])


def test_a_batch_that_outgrows_the_buffers_or_has_another_shape_is_refused():
    graph = _graph(seed=8)
    enc = GNNBackbone("sage", 9, hidden=5, layers=2, dropout=0.0)
    reads = enc.plan_reads()
    small = [enc.plan(g) for g in _items(graph, 2, seed=9, nodes=3)]
    static = StaticTaskLayout(small, reads, PlanCapacity((0, 0, 0), (0, 0)))
    large = [enc.plan(g) for g in _items(graph, 2, seed=10, nodes=40)]
    assert not static.holds(large)
    with pytest.raises(ValueError, match="do not fit"):
        static.fill(large)
    assert not static.holds(small[:1])  # one task, not two
    grown = static.capacity.grown(plan_needs(large, reads))
    assert grown.holds(plan_needs(large, reads)) and grown.holds(static.capacity)
    read = [r for r in grown.rows if r]  # the input level is not read without dropout (0 rows)
    assert grown.rows[0] == 0 and all(a >= b for a, b in zip(read, read[1:], strict=False))


def test_a_constant_too_wide_to_pad_is_refused(monkeypatch):
    import cmlgraph.backbones.plan_static as ps

    monkeypatch.setattr(ps, "MAX_FEATURE_BYTES", 64)
    enc = GNNBackbone("gcn", 9, hidden=5, layers=2, dropout=0.0)
    plans = [enc.plan(g) for g in _items(_graph(), 2, seed=1)]
    with pytest.raises(ValueError, match="too wide to pad"):
        StaticTaskLayout(plans, enc.plan_reads())


def test_a_layout_not_built_for_a_read_says_so():
    enc = GNNBackbone("gcn", 9, hidden=5, layers=2, dropout=0.0)
    plans = [enc.plan(g) for g in _items(_graph(), 2, seed=1)]
    static = StaticTaskLayout(plans, PlanReads((("z", 1),), (1,)))
    with pytest.raises(KeyError, match="no aggregation of layer 0"):
        static.agg(0)
    with pytest.raises(KeyError, match="no constant 'r'"):
        static.constant("r", 1)


def test_the_index_aggregation_equals_the_sparse_product_to_second_order():
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(5, (12,), generator=g), torch.randint(4, (12,), generator=g)
    vals = torch.rand(12, generator=g)
    dense = torch.zeros(5, 4).index_put_((rows, cols), vals, accumulate=True)
    y = torch.randn(4, 3, generator=g, requires_grad=True)
    a = IndexAggregation(rows, cols, vals, (5, 4))
    torch.testing.assert_close(a.matmul(y), dense @ y)
    (gy,) = torch.autograd.grad(a.matmul(y).pow(2).sum(), y, create_graph=True)
    (gy_ref,) = torch.autograd.grad((dense @ y).pow(2).sum(), y, create_graph=True)
    torch.testing.assert_close(gy, gy_ref)
    torch.testing.assert_close(torch.autograd.grad(gy.sum(), y)[0], torch.autograd.grad(gy_ref.sum(), y)[0])


def test_refilling_and_the_padded_pass_issue_no_sync():
    """What a replay runs, counted on the CPU: refilling the buffers from prepared plans (constants built) and the
    pass over them."""
    graph = _graph(seed=11)
    enc = GNNBackbone("gin", 9, hidden=5, layers=2, dropout=0.0)
    reads = enc.plan_reads()
    first = [enc.plan(g) for g in _items(graph, 3, seed=12)]
    nxt = [enc.plan(g) for g in _items(graph, 3, seed=13)]
    static = StaticTaskLayout(first, reads, plan_needs(first, reads).grown(plan_needs(nxt, reads)))
    for p in nxt:  # the constants, as the prefetch worker's preparation builds them
        for key, _ in reads.constants:
            plan_constant(p, key)
    params = _params(enc, 3)
    with SyncCounter() as counter:
        static.fill(nxt)
        enc._forward_plan(params, static)
    assert counter.total == 0, counter.counts
