"""Computation trees and batched GNN tasks: exact against the whole-graph pass and the per-task loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.backbones.gnn_plan import complete_plan
from cmlgraph.core.episode import Episode, can_stack, stack
from cmlgraph.core.inner_loop import InnerLoopConfig
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.core.objective import outer_objective
from cmlgraph.graphs.types import GraphBatch, GraphInput

KINDS = ["gcn", "sgc", "sage", "gin"]


def _graph(n: int = 200, sparse: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 4 * n), generator=g)
    ei = torch.cat([ei, ei.flip(0), torch.tensor([[3, 3], [3, 3]])], 1)  # a self-loop and duplicate edges
    if sparse:
        x = (torch.rand(n, 40, generator=g) < 0.08).double() * torch.rand(n, 40, generator=g, dtype=torch.float64)
        return x.to_sparse_csr(), ei
    return torch.randn(n, 12, generator=g, dtype=torch.float64), ei


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_computation_tree_equals_whole_graph(kind, sparse, layers):
    x, ei = _graph(sparse=sparse)
    torch.manual_seed(0)
    net = GNNBackbone(kind, x.shape[1], hidden=8, layers=layers, train_eps=True).double()
    nodes = torch.tensor([5, 17, 3, 5, 150])  # a duplicate and the self-looped node
    cache: dict = {}
    whole = net(GraphInput(x, ei, nodes, cache))
    tree_input = GraphInput(x, ei, nodes, cache, local=True)
    tree = net(tree_input)
    torch.testing.assert_close(tree, whole, atol=1e-12, rtol=1e-10)
    plan = complete_plan(net.plan(tree_input))
    assert len(plan.sizes) == layers + 1 and plan.sizes[-1] == 4  # distinct requested nodes
    assert plan.sizes == sorted(plan.sizes, reverse=True)  # levels shrink towards the output


def _task_weights(net: GNNBackbone, tasks: int) -> dict[str, torch.Tensor]:
    """Per-task weights ``[T, ...]``: the module's, each task's perturbed differently."""
    return {k: v.detach().unsqueeze(0) + 0.1 * torch.randn(tasks, *v.shape, dtype=v.dtype)
            for k, v in net.named_parameters()}


def _task_loop(net: GNNBackbone, params: dict[str, torch.Tensor], items: list[GraphInput]) -> torch.Tensor:
    """The reference: each task's input through the module with its own weights, one functional call each."""
    return torch.stack([torch.func.functional_call(net, {k: v[t] for k, v in params.items()}, (g,))
                        for t, g in enumerate(items)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_forward_tasks_equals_loop_with_per_task_weights(kind, sparse):
    x, ei = _graph(sparse=sparse, seed=1)
    torch.manual_seed(1)
    net = GNNBackbone(kind, x.shape[1], hidden=8, layers=2, train_eps=True).double()
    cache: dict = {}
    items = [GraphInput(x, ei, torch.randperm(200)[:6], cache, local=True) for _ in range(3)]
    params = _task_weights(net, 3)
    batched = net.forward_tasks(params, GraphBatch(items))
    looped = _task_loop(net, params, [GraphInput(x, ei, g.nodes, cache) for g in items])
    torch.testing.assert_close(batched, looped, atol=1e-12, rtol=1e-10)


def _episodes(x, ei, tasks: int, seed: int) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    cache: dict = {}
    out = []
    for _ in range(tasks):
        perm = torch.randperm(x.shape[0], generator=g)
        s, q = perm[:6], perm[6:15]
        out.append(Episode(GraphInput(x, ei, s, cache, local=True), torch.arange(3).repeat(2),
                           GraphInput(x, ei, q, cache, local=True), torch.arange(3).repeat(3)))
    return out


def _assert_batched_equals_loop(model, params, eps, inner) -> None:
    """The batched outer objective equals the per-task loop: loss and every (non-zero) meta-gradient."""
    a = outer_objective(model, params, eps, F.cross_entropy, inner, batched=True)
    b = outer_objective(model, params, eps, F.cross_entropy, inner, batched=False)
    torch.testing.assert_close(a.total, b.total, atol=1e-12, rtol=1e-10)
    names = list(params)
    ga = torch.autograd.grad(a.total, [params[k] for k in names])
    gb = torch.autograd.grad(b.total, [params[k] for k in names])
    for k, u, v in zip(names, ga, gb, strict=True):
        assert u.abs().sum() > 0, k
        torch.testing.assert_close(u, v, atol=1e-10, rtol=1e-8, msg=k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_outer_objective_equals_per_task_loop(kind, first_order):
    x, ei = _graph(sparse=kind in ("gcn", "sage"), seed=2)
    torch.manual_seed(2)
    model = MetaModel(GNNBackbone(kind, x.shape[1], hidden=8, layers=2), 3, co_depth=1).double()
    params = parameters_of(model)
    eps = _episodes(x, ei, 4, seed=3)
    assert can_stack(eps) and isinstance(stack(eps).support_x, GraphBatch)
    _assert_batched_equals_loop(model, params, eps, InnerLoopConfig(steps=2, lr=0.3, first_order=first_order))


def test_whole_graph_inputs_do_not_stack_and_gat_runs_task_by_task():
    x, ei = _graph(seed=4)
    eps = _episodes(x, ei, 2, seed=5)
    whole = [Episode(GraphInput(e.support_x.x, ei, e.support_x.nodes), e.support_y,
                     GraphInput(e.query_x.x, ei, e.query_x.nodes), e.query_y) for e in eps]
    assert not can_stack(whole)
    torch.manual_seed(4)
    net = GNNBackbone("gat", x.shape[1], hidden=8, layers=2).double()
    params = {k: v.detach().unsqueeze(0).repeat(2, *[1] * v.dim()) for k, v in net.named_parameters()}
    out = net.forward_tasks(params, stack(eps).support_x)
    ref = torch.stack([net(GraphInput(x, ei, e.support_x.nodes)) for e in eps])
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("kind", ["gcn", "sage", "gin"])
def test_input_dropout_in_training_runs_on_the_tree_and_is_off_in_eval(kind):
    x, ei = _graph(sparse=True, seed=6)
    torch.manual_seed(6)
    net = GNNBackbone(kind, x.shape[1], hidden=8, layers=2, dropout=0.5).double()
    nodes = torch.arange(10)
    cache: dict = {}
    net.eval()
    torch.testing.assert_close(net(GraphInput(x, ei, nodes, cache, local=True)), net(GraphInput(x, ei, nodes, cache)))
    net.train()
    items = [GraphInput(x, ei, nodes, cache, local=True) for _ in range(2)]
    params = {k: v.detach().unsqueeze(0).repeat(2, *[1] * v.dim()) for k, v in net.named_parameters()}
    out = net.forward_tasks(params, GraphBatch(items))
    assert out.shape == (2, 10, 8) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # each task draws its own mask


def test_adjacency_rows_rebuilds_when_the_cached_full_adjacency_has_another_dtype():
    from cmlgraph.backbones.gnn_ops import adjacency_rows, gcn_adj

    x, ei = _graph(seed=7)
    cache: dict = {}
    gcn_adj(GraphInput(x.float(), ei, torch.arange(3), cache))  # a float32 whole-graph pass filled the cache
    rows = adjacency_rows(GraphInput(x, ei, torch.arange(3), cache), "gcn")
    assert rows is not None and rows.dtype == torch.float64 and rows.layout == torch.sparse_csr


@pytest.mark.parametrize("sparse,max_fill", [(False, 16.0), (True, 16.0), (True, 0.0)],
                         ids=["dense", "sparse", "sparse-rows-only"])
def test_sgc_whole_graph_tasks_batch_and_equal_the_loop(sparse, max_fill):
    # SGC on the whole graph (the practitioner's default mode on dense graphs): the tasks' propagated rows are
    # gathered once and the meta-batch runs as one batched product; same losses and meta-gradients as task by task
    x, ei = _graph(sparse=sparse, seed=6)
    torch.manual_seed(6)
    model = MetaModel(GNNBackbone("sgc", x.shape[1], hidden=8, layers=2, sgc_max_fill=max_fill), 3,
                      co_depth=1).double()
    params = parameters_of(model)
    cache: dict = {}
    eps = [Episode(GraphInput(x, ei, e.support_x.nodes, cache, batch_whole=True), e.support_y,
                   GraphInput(x, ei, e.query_x.nodes, cache, batch_whole=True), e.query_y)
           for e in _episodes(x, ei, 3, seed=7)]
    assert can_stack(eps)
    mixed = [eps[0], Episode(GraphInput(x, ei, eps[1].support_x.nodes, cache, local=True), eps[1].support_y,
                             eps[1].query_x, eps[1].query_y)]
    assert not can_stack(mixed)  # a whole-graph and a computation-tree input never share a batch
    _assert_batched_equals_loop(model, params, eps, InnerLoopConfig(steps=2, lr=0.3, first_order=False))


@pytest.mark.parametrize("kind", ["gcn", "sage", "gin", "gat"])
@pytest.mark.parametrize("sparse", [False, True])
def test_whole_graph_tasks_of_gcn_sage_gin_gat_run_as_one_pass_and_equal_the_loop(kind, sparse, monkeypatch):
    # GCN, SAGE, GIN and GAT on the whole graph ("full" mode): the tasks' activations node-major [N, T, d], one
    # aggregation for all tasks per layer (GAT: every task's attention per edge at once); same features, losses
    # and meta-gradients (second order) as task by task
    import cmlgraph.backbones.gnn as gnn

    x, ei = _graph(sparse=sparse, seed=8)
    torch.manual_seed(8)
    net = GNNBackbone(kind, x.shape[1], hidden=8, layers=2, train_eps=True).double()
    cache: dict = {}
    items = [GraphInput(x, ei, torch.randperm(200)[:6], cache, batch_whole=True) for _ in range(5)]
    params = _task_weights(net, 5)
    looped = _task_loop(net, params, items)
    calls: list[int] = []
    chunk = net._whole_graph_chunk
    monkeypatch.setattr(net, "_whole_graph_chunk", lambda *a: calls.append(a[3]) or chunk(*a))
    torch.testing.assert_close(net.forward_tasks(params, GraphBatch(items)), looped, atol=1e-12, rtol=1e-10)
    assert calls == [5]  # one pass for the five tasks
    width = int(net._graph(items[0]).shape[1]) if kind == "gat" else 200  # GAT: its per-edge messages
    monkeypatch.setattr(gnn, "WHOLE_GRAPH_VALUES", width * 8 * 2)  # a budget of two tasks: chunks of 2, 2, 1
    torch.testing.assert_close(net.forward_tasks(params, GraphBatch(items)), looped, atol=1e-12, rtol=1e-10)
    assert calls == [5, 2, 2, 1]
    monkeypatch.setattr(net, "_whole_graph_chunk", chunk)

    torch.manual_seed(9)
    model = MetaModel(GNNBackbone(kind, x.shape[1], hidden=8, layers=2, train_eps=True), 3, co_depth=1).double()
    eps = [Episode(GraphInput(x, ei, e.support_x.nodes, cache, batch_whole=True), e.support_y,
                   GraphInput(x, ei, e.query_x.nodes, cache, batch_whole=True), e.query_y)
           for e in _episodes(x, ei, 3, seed=10)]
    assert can_stack(eps)
    _assert_batched_equals_loop(model, parameters_of(model), eps, InnerLoopConfig(steps=2, lr=0.3))


def _seeded(fn, seed: int = 21):
    """``fn()`` from a fixed state of torch's global RNG, and whether the RNG ends where it did for the first call."""
    torch.manual_seed(seed)
    out = fn()
    return out, torch.rand(3)


# p = 0.5 draws bytes on the CPU (core/dropout's fast branch), 0.3 torch.rand as a CUDA device always does
@pytest.mark.parametrize("p", [0.5, 0.3])
@pytest.mark.parametrize("kind", ["gcn", "sage", "gin", "gat"])
@pytest.mark.parametrize("sparse", [False, True])
def test_whole_graph_tasks_with_dropout_run_as_one_pass_with_each_tasks_own_masks(kind, sparse, p, monkeypatch):
    # input dropout in training: each task's masks are drawn in the order its own pass draws them (task by task,
    # layer by layer), so the one pass equals the task loop from the same RNG state (features, and the RNG left in
    # the same state), also in chunks; and the second-order meta-objective equals the one whose passes ran task
    # by task (the path before session 34). The one pass is the GPU's (on the CPU the task loop measured faster)
    import cmlgraph.backbones.gnn as gnn

    x, ei = _graph(sparse=sparse, seed=11)
    torch.manual_seed(11)
    net = GNNBackbone(kind, x.shape[1], hidden=8, layers=3, heads=2, train_eps=True, dropout=p).double()
    cache: dict = {}
    items = [GraphInput(x, ei, torch.randperm(200)[:6], cache, batch_whole=True) for _ in range(5)]
    params = _task_weights(net, 5)
    looped, after_loop = _seeded(lambda: _task_loop(net, params, items))
    calls: list[int] = []
    chunk = net._whole_graph_chunk
    monkeypatch.setattr(net, "_whole_graph_chunk", lambda *a: calls.append(a[3]) or chunk(*a))
    out, after = _seeded(lambda: net.forward_tasks(params, GraphBatch(items)))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop) and calls == []  # the CPU: task by task
    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)  # as on a GPU
    out, after = _seeded(lambda: net.forward_tasks(params, GraphBatch(items)))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop) and calls == [5]  # one pass, the same draws
    monkeypatch.setattr(gnn, "layout_batches", lambda device: True)  # and the GPU's one masked projection
    out, after = _seeded(lambda: net.forward_tasks(params, GraphBatch(items)))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop) and calls == [5, 5]
    monkeypatch.setattr(gnn, "layout_batches", lambda device: False)
    calls.pop()
    assert not torch.allclose(out, _seeded(lambda: net.forward_tasks(params, GraphBatch(items)), 22)[0])
    monkeypatch.setattr(gnn, "WHOLE_GRAPH_VALUES", 1)  # a task a chunk: still each task's own masks
    out, after = _seeded(lambda: net.forward_tasks(params, GraphBatch(items)))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop) and calls == [5, 5, 1, 1, 1, 1, 1]  # (the other seed: one pass)
    monkeypatch.undo()
    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    net.eval()  # evaluation draws nothing: the shared features are projected once again
    torch.testing.assert_close(net.forward_tasks(params, GraphBatch(items)), _task_loop(net, params, items),
                               atol=1e-12, rtol=1e-10)

    torch.manual_seed(12)
    model = MetaModel(GNNBackbone(kind, x.shape[1], hidden=8, layers=2, heads=2, dropout=0.5), 3,
                      co_depth=1).double()
    eps = [Episode(GraphInput(x, ei, e.support_x.nodes, cache, batch_whole=True), e.support_y,
                   GraphInput(x, ei, e.query_x.nodes, cache, batch_whole=True), e.query_y)
           for e in _episodes(x, ei, 3, seed=13)]
    _assert_same_as_tasks_one_by_one(model, eps, monkeypatch)


def _assert_same_as_tasks_one_by_one(model, eps, monkeypatch) -> None:
    """With dropout, the batched outer objective (loss and meta-gradients, second order) equals the same objective
    whose GNN passes run task by task (``functional_call`` a task, as before session 34), from the same RNG state."""
    from cmlgraph.backbones.gnn import GNNBackbone as Net

    params = parameters_of(model)
    inner = InnerLoopConfig(steps=2, lr=0.3)

    def objective():
        out = outer_objective(model, params, eps, F.cross_entropy, inner, batched=True)
        return out.total, torch.autograd.grad(out.total, list(params.values()))

    (a, ga), after_a = _seeded(objective)
    with monkeypatch.context() as m:
        m.setattr(Net, "_draws_attention_dropout", property(lambda self: True))  # the one-by-one path
        (b, gb), after_b = _seeded(objective)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert torch.equal(after_a, after_b)
    for k, u, v in zip(params, ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-10, rtol=1e-8, msg=k)


def test_a_tasks_pass_values_count_its_masked_features_in_training_with_dropout():
    # the first layer keeps each task's masked dense features for its weight gradient (N x F, on Amazon-Computers
    # six times the layers' activations): the memory estimate counts them in training with dropout only
    x, ei = _graph(seed=19)
    g = GraphInput(x, ei, torch.arange(6), {}, batch_whole=True)
    plain = GNNBackbone("gcn", x.shape[1], hidden=8, layers=2).pass_values(g)
    dropped = GNNBackbone("gcn", x.shape[1], hidden=8, layers=2, dropout=0.5)
    assert plain == 2 * 8 * 200 and dropped.pass_values(g) == plain + 200 * 12
    dropped.eval()
    assert dropped.pass_values(g) == plain
    sparse, _ = _graph(sparse=True, seed=19)  # sparse features: masked stored values only, not counted
    dropped.train()
    assert dropped.pass_values(GraphInput(sparse, ei, torch.arange(6), {}, batch_whole=True)) == plain


def test_gat_attention_dropout_still_runs_task_by_task():
    # GAT's attention dropout is drawn inside PyG's conv: those passes stay per task
    x, ei = _graph(seed=11)
    torch.manual_seed(11)
    net = GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2, attn_dropout=0.5).double()
    cache: dict = {}
    items = [GraphInput(x, ei, torch.arange(6), cache, batch_whole=True) for _ in range(2)]
    params = {k: v.detach().unsqueeze(0).repeat(2, *[1] * v.dim()) for k, v in net.named_parameters()}
    called: list[int] = []
    net._whole_graph_chunk = lambda *a: called.append(1)  # must not be reached in training
    out = net.forward_tasks(params, GraphBatch(items))
    assert not called and out.shape == (2, 6, 8) and not torch.allclose(out[0], out[1])
    del net._whole_graph_chunk
    net.eval()  # evaluation has no dropout: one pass, equal tasks give equal features
    out = net.forward_tasks(params, GraphBatch(items))
    torch.testing.assert_close(out[0], out[1])


def _subgraph_input(x, ei, nodes: torch.Tensor, hops: int = 2) -> GraphInput:
    """An episode's own k-hop subgraph input (GAT's ``khop`` mode), relabelled as the graph domain builds it."""
    from torch_geometric.utils import k_hop_subgraph

    subset, sub_ei, mapping, _ = k_hop_subgraph(nodes, hops, ei, relabel_nodes=True, num_nodes=x.shape[0])
    xs = x.to_dense()[subset] if x.layout != torch.strided else x[subset]
    if x.layout != torch.strided:
        xs = xs.to_sparse_csr()
    return GraphInput(xs, sub_ei, mapping, {}, subgraph=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_gat_k_hop_subgraph_tasks_run_as_one_union_pass_and_equal_the_loop(sparse, monkeypatch):
    # GAT in khop mode: each task's own subgraph (of its own size), the tasks as one pass over the disjoint union
    # (padded blocks, offset edges); same features as task by task, in groups when the edge budget is small, and the
    # same second-order losses and meta-gradients
    import cmlgraph.backbones.gnn as gnn

    x, ei = _graph(sparse=sparse, seed=12)
    torch.manual_seed(12)
    net = GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2).double()
    items = [_subgraph_input(x, ei, torch.randperm(200)[:5]) for _ in range(4)]
    assert len({g.num_nodes for g in items}) > 1  # subgraphs of different sizes: padding is exercised
    assert GraphInput.can_stack_tasks(items)
    params = _task_weights(net, 4)
    looped = _task_loop(net, params, items)
    torch.testing.assert_close(net.forward_tasks(params, GraphBatch(items)), looped, atol=1e-12, rtol=1e-10)
    batch = GraphBatch(items)
    monkeypatch.setattr(gnn, "WHOLE_GRAPH_VALUES", 8)  # one edge's messages: every task its own group
    torch.testing.assert_close(net.forward_tasks(params, batch), looped, atol=1e-12, rtol=1e-10)
    assert [(a, b) for a, b, _ in batch.memo["gat/groups"]] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    monkeypatch.undo()

    torch.manual_seed(13)
    model = MetaModel(GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2), 3, co_depth=1).double()
    g = torch.Generator().manual_seed(14)
    eps = []
    for _ in range(3):
        perm = torch.randperm(200, generator=g)
        sub = _subgraph_input(x, ei, perm[:15])
        s = GraphInput(sub.x, sub.edge_index, sub.nodes[:6], sub.cache, subgraph=True)
        q = GraphInput(sub.x, sub.edge_index, sub.nodes[6:], sub.cache, subgraph=True)
        eps.append(Episode(s, torch.arange(3).repeat(2), q, torch.arange(3).repeat(3)))
    assert can_stack(eps)
    _assert_batched_equals_loop(model, parameters_of(model), eps, InnerLoopConfig(steps=2, lr=0.3))


@pytest.mark.parametrize("p", [0.5, 0.3])  # the CPU's byte draws, and torch.rand (a CUDA device's)
@pytest.mark.parametrize("sparse", [False, True])
def test_gat_k_hop_subgraph_tasks_with_dropout_run_as_one_union_pass_with_each_tasks_own_masks(sparse, p,
                                                                                                monkeypatch):
    # input dropout in training on GAT's k-hop subgraphs: each task's masks over its own subgraph's rows (sparse:
    # its block's stored values), drawn as its own pass draws them; the union pass equals the task loop from the
    # same RNG state, in groups too, and the meta-objective equals the one whose passes ran task by task
    import cmlgraph.backbones.gnn as gnn

    x, ei = _graph(sparse=sparse, seed=16)
    torch.manual_seed(16)
    net = GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2, dropout=p).double()
    items = [_subgraph_input(x, ei, torch.randperm(200)[:5]) for _ in range(4)]
    assert len({g.num_nodes for g in items}) > 1  # padded blocks: a task's masks cover its own rows only
    params = _task_weights(net, 4)
    looped, after_loop = _seeded(lambda: _task_loop(net, params, items))
    out, after = _seeded(lambda: net.forward_tasks(params, GraphBatch(items)))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop)
    batch = GraphBatch(items)
    monkeypatch.setattr(gnn, "WHOLE_GRAPH_VALUES", 8)  # every task its own group
    out, after = _seeded(lambda: net.forward_tasks(params, batch))
    torch.testing.assert_close(out, looped, atol=1e-12, rtol=1e-10)
    assert torch.equal(after, after_loop) and len(batch.memo["gat/groups"]) == 4
    monkeypatch.undo()

    torch.manual_seed(17)
    model = MetaModel(GNNBackbone("gat", x.shape[1], hidden=8, layers=2, heads=2, dropout=0.5), 3,
                      co_depth=1).double()
    g = torch.Generator().manual_seed(18)
    eps = []
    for _ in range(3):
        sub = _subgraph_input(x, ei, torch.randperm(200, generator=g)[:15])
        s = GraphInput(sub.x, sub.edge_index, sub.nodes[:6], sub.cache, subgraph=True)
        q = GraphInput(sub.x, sub.edge_index, sub.nodes[6:], sub.cache, subgraph=True)
        eps.append(Episode(s, torch.arange(3).repeat(2), q, torch.arange(3).repeat(3)))
    _assert_same_as_tasks_one_by_one(model, eps, monkeypatch)


def test_subgraph_inputs_do_not_stack_with_other_inputs_or_widths():
    x, ei = _graph(seed=15)
    sub = _subgraph_input(x, ei, torch.arange(4))
    whole = GraphInput(x, ei, torch.arange(4), {}, batch_whole=True)
    assert not GraphInput.can_stack_tasks([sub, whole]) and not GraphInput.can_stack_tasks([whole, sub])
    narrow = GraphInput(sub.x[:, :5], sub.edge_index, sub.nodes, {}, subgraph=True)
    assert not GraphInput.can_stack_tasks([sub, narrow])
    assert not GraphInput.can_stack_tasks([sub, _subgraph_input(x, ei, torch.arange(5))])  # 5 nodes, not 4


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("tasks,gpu", [(1, True), (3, False), (9, False), (9, True)])
def test_the_batch_layout_is_built_at_once_off_the_cpu_and_equals_its_tasks_one_by_one(layers, tasks, gpu,
                                                                                        monkeypatch):
    """(issue 18 item 3) Off the CPU (``gpu``: its choice forced here), from ``BATCH_LAYOUT_TASKS`` tasks on, a
    batch's block-diagonal aggregations and its dense constants (first aggregation ``z``, SGC's ``Â^K X``, the
    rows ``r`` and ``x`` of a level) are built with a fixed number of ops whatever the number of tasks. Either way
    they equal each task's own matrix and constant laid out as before: a dense block diagonal of the tasks'
    padded matrices (bit for bit), and each task's ``plan_constant`` at the top of its padded block (the gathered
    rows bit for bit, the products to float64 rounding; the CPU's task loop bit for bit)."""
    import cmlgraph.backbones.gnn_plan as gnn_plan
    from cmlgraph.backbones.gnn_ops import BLOCK_NNZ, adjacency_rows
    from cmlgraph.backbones.gnn_plan import (
        BATCH_LAYOUT_TASKS,
        TaskLayout,
        _layer_csr,
        build_plan,
        host_prepare,
        plan_constant,
    )
    from cmlgraph.train.launch_counter import LaunchCounter

    assert not gnn_plan.layout_batches(torch.device("cpu")) and gnn_plan.layout_batches(torch.device("meta"))
    monkeypatch.setattr(gnn_plan, "layout_batches", lambda device: gpu)
    x, ei = _graph(seed=3)
    adj = adjacency_rows(GraphInput(x, ei, torch.arange(2), {}), "gcn")
    g = torch.Generator().manual_seed(4)

    def plans(tasks: int) -> list:
        out = []
        for t in range(tasks):  # tasks of different sizes, one with a repeated node
            nodes = torch.randint(0, 200, (3 + 2 * (t % 3),), generator=g)
            p = complete_plan(build_plan(adj, x, torch.cat([nodes, nodes[:1]]) if t == 1 else nodes, layers))
            out.append(host_prepare(p, x, (), tuple(range(layers))))
        return out

    def padded(c: torch.Tensor, rows: int) -> torch.Tensor:
        return torch.cat([c, c.new_zeros(rows - c.shape[0], c.shape[1])])

    ps = plans(tasks)
    lay = TaskLayout(ps)
    exact = not gpu or tasks < BATCH_LAYOUT_TASKS
    for key, level in (("z", 1), ("sgc", layers), ("r", 1), ("x", 0)):
        got = lay.constant(key, level)
        want = torch.stack([padded(plan_constant(p, key), lay.sizes[level]) for p in plans_copy(ps)])
        assert got.shape == want.shape, key
        if exact or key in ("r", "x"):
            assert torch.equal(got, want), key
        else:
            torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
    for layer in range(layers):
        agg = lay.agg(layer)
        rows, cols = lay.sizes[layer + 1], lay.sizes[layer]
        dense = [_layer_csr(p, layer).to_dense() for p in ps]
        want = torch.block_diag(*[F.pad(d, (0, cols - d.shape[1], 0, rows - d.shape[0])) for d in dense])
        assert torch.equal(agg.to_dense(), want), layer
        assert getattr(agg, BLOCK_NNZ) == [int(_layer_csr(p, layer).values().numel()) for p in ps]

    def ops(tasks: int) -> int:
        lay = TaskLayout(plans(tasks))
        with LaunchCounter() as c:
            lay.constant("z", 1)
            lay.constant("sgc", layers)
            lay.agg(layers - 1)
        return c.total

    if gpu:  # the same ops for 8 tasks as for 24
        assert ops(BATCH_LAYOUT_TASKS) == ops(3 * BATCH_LAYOUT_TASKS)
    else:  # the CPU's task loop
        assert ops(BATCH_LAYOUT_TASKS) < ops(3 * BATCH_LAYOUT_TASKS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_batch_layout_built_at_once_on_cuda_equals_the_cpus_task_loop_on_cuda():
    """On a GPU (float32, cuSPARSE), the layout of 9 tasks built at once equals the CPU's task loop."""
    from cmlgraph.backbones.gnn_ops import adjacency_rows
    from cmlgraph.backbones.gnn_plan import TaskLayout, build_plan, host_prepare, plan_to

    x, ei = _graph(seed=5)
    x = x.float()
    adj = adjacency_rows(GraphInput(x, ei, torch.arange(2), {}), "gcn")
    g = torch.Generator().manual_seed(6)
    host = [host_prepare(complete_plan(build_plan(adj, x, torch.randint(0, 200, (4 + t % 3,), generator=g), 2)),
                         x, (), (0, 1)) for t in range(9)]
    on_gpu = TaskLayout([plan_to(p, x.cuda()) for p in host])
    on_cpu = TaskLayout(plans_copy(host))
    for key, level in (("z", 1), ("sgc", 2), ("r", 1), ("x", 0)):
        torch.testing.assert_close(on_gpu.constant(key, level).cpu(), on_cpu.constant(key, level))
    for layer in (0, 1):
        assert torch.equal(on_gpu.agg(layer).to_dense().cpu(), on_cpu.agg(layer).to_dense())


def plans_copy(ps: list) -> list:
    """The plans with fresh memos (their constants not built yet), for the task-by-task reference."""
    from cmlgraph.backbones.gnn_plan import Plan

    return [Plan(sizes=list(p.sizes), mats=list(p.mats), x=p.x, out=p.out,
                 memo={k: v for k, v in p.memo.items() if k in ("prev_level", "first_global", "level")}) for p in ps]


@pytest.mark.parametrize("sparse", [False, True])
def test_gats_subgraph_union_of_many_tasks_is_built_at_once_off_the_cpu_and_equals_the_loop(sparse, monkeypatch):
    """(issue 18) From ``BATCH_LAYOUT_TASKS`` tasks on, off the CPU (its choice forced here), GAT's k-hop subgraph
    union (padded features, offset self-looped edges and requested nodes) is built with a fixed number of ops, and
    equals the task loop's bit for bit."""
    import cmlgraph.backbones.gnn as gnn
    from cmlgraph.backbones.gnn_plan import BATCH_LAYOUT_TASKS
    from cmlgraph.train.launch_counter import LaunchCounter

    x, ei = _graph(sparse=sparse, seed=7)
    g = torch.Generator().manual_seed(8)

    def items(tasks: int) -> list[GraphInput]:
        return [_subgraph_input(x, ei, torch.randint(0, 200, (2 + t % 3,), generator=g)) for t in range(tasks)]

    batch = items(BATCH_LAYOUT_TASKS + 1)
    loop = gnn._union_layout(batch)
    monkeypatch.setattr(gnn, "layout_batches", lambda device: True)
    once = gnn._union_layout(batch)
    assert once["rows"] == loop["rows"]
    for key in ("edges", "out"):
        assert torch.equal(once[key], loop[key]), key
    dense = (lambda t: t.to_dense()) if sparse else (lambda t: t)
    assert torch.equal(dense(once["x"]), dense(loop["x"]))

    def ops(tasks: int) -> int:
        its = items(tasks)
        gnn._union_layout(its)  # each input's self-looped edges built and cached (in a run: on the host, ahead)
        with LaunchCounter() as c:
            gnn._union_layout(its)
        return c.total

    assert ops(BATCH_LAYOUT_TASKS) == ops(3 * BATCH_LAYOUT_TASKS)
