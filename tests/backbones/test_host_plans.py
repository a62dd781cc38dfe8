"""k-hop plans built on the host in ``materialize`` (issue 18 item 2): the same plan and outputs as the backbone's own
lazily built one, attached so the forward builds none, and moved to another device as whole index tensors."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.algorithms import get_algorithm
from cmlgraph.backbones.gnn import PLAN_AGGREGATION, prepare_plan
from cmlgraph.backbones.gnn_plan import build_plan, plan_to
from cmlgraph.config import AlgoConfig
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.core.transfer import to_device
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.domains.tlp_graph import TLPGraphDomain
from cmlgraph.graphs import GraphInput, make_synthetic


@pytest.fixture(scope="module")
def graph():
    return make_synthetic(num_nodes=600, num_classes=12, avg_degree=3, seed=0, split="4/4/4")


def _lazy(g: GraphInput) -> GraphInput:
    """The same input without a prepared plan: the backbone builds it on its first forward."""
    return GraphInput(g.x, g.edge_index, g.nodes, g.cache, local=True)


@pytest.mark.parametrize(("gnn", "dropout"), [("gcn", 0.0), ("gcn", 0.3), ("sgc", 0.0), ("sage", 0.3), ("gin", 0.0)])
def test_host_plan_gives_the_backbones_meta_gradients(graph, gnn, dropout):
    domain = GraphDomain(graph, ways=3, shots=2, queries=3, gnn=gnn, hidden=8, layers=2, dropout=dropout,
                         subgraph="khop")
    assert domain.trees
    torch.manual_seed(0)
    model = MetaModel(domain.build_extractor(), 3, co_depth=1)
    algo = get_algorithm(AlgoConfig(algo="maml", inner_steps=2, inner_lr=0.5, co_depth=1))
    raws = domain.sample("train", 2, torch.Generator().manual_seed(1))
    prepared = [domain.materialize(r) for r in raws]
    key = (PLAN_AGGREGATION[gnn], 2)
    assert all(key in ep.support_x.__dict__.get("_plans", {}) for ep in prepared)
    # complete (input level listed) exactly when training reads the input level: input dropout of GCN/SAGE/GIN
    assert (prepared[0].support_x._plans[key].mats[0] is not None) == (dropout > 0)
    lazy = [type(ep)(_lazy(ep.support_x), ep.support_y, _lazy(ep.query_x), ep.query_y) for ep in prepared]
    params = parameters_of(model)
    out = []
    for eps in (prepared, lazy):
        torch.manual_seed(3)  # dropout draws
        out.append(algo.meta_gradients(model, params, eps, domain.loss_fn, 0, batched=True))
    assert torch.equal(out[0].loss.total, out[1].loss.total)
    for k in params:
        assert torch.equal(out[0].grads[k], out[1].grads[k]), k
    built = model.extractor.plan(lazy[0].support_x)
    host = prepared[0].support_x._plans[key]
    assert host.sizes[1:] == built.sizes[1:] and torch.equal(host.memo["prev_level"], built.memo["prev_level"])


def test_ammgnn_plans_are_prepared_on_the_host(graph):
    domain = TLPGraphDomain(graph, 2, 2, 3, kind="ammgnn")
    ep = domain.materialize(domain.sample("train", 1, torch.Generator().manual_seed(0))[0])
    for inp in (ep.support_x, ep.query_x):
        assert "rownorm" in inp.graph.__dict__["_plans"]


def test_plan_to_moves_every_index_tensor_and_reads_the_given_features(graph):
    x = graph.x.to_dense() if graph.x.is_sparse else graph.x
    g = GraphInput(x, graph.edge_index, torch.tensor([4, 9, 4, 100]), {}, local=True)
    prepare_plan(g, g, "gcn", 2, complete=True)
    plan = g._plans[("gcn", 2)]
    assert plan.x is x  # on the CPU nothing is copied
    meta_x = torch.empty(x.shape, device="meta")
    moved = plan_to(plan, meta_x)
    tensors = [moved.out, moved.memo["prev_level"], moved.memo["level"], *(
        t for m in [*moved.mats, moved.memo["first_global"]] for t in (m.rows, m.cols, m.vals))]
    assert moved.x is meta_x and all(t.device.type == "meta" for t in tensors)
    assert moved.sizes == plan.sizes and [m.shape for m in moved.mats] == [m.shape for m in plan.mats]


def test_build_plan_only_reads_the_feature_count(graph):
    adj = torch.sparse_csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([1, 0]), torch.ones(2), (2, 2))
    plan = build_plan(adj, torch.empty(2, 3, device="meta"), torch.tensor([0]), 1)
    assert plan.memo["first_global"].shape == (1, 2)


def test_to_device_keeps_a_tensor_already_there():
    t = torch.arange(3)
    assert to_device(t, "cpu") is t and to_device(t, torch.device("cpu")) is t
    assert to_device(t, "meta").device.type == "meta"


def test_a_plan_travels_in_one_copy_per_dtype_and_arrives_whole(graph, monkeypatch):
    """(issue 18) ``plan_to`` sends a plan's dozen index and value tensors as one copy per dtype
    (``to_device_all``): every tensor arrives on the device in its shape; on the CPU nothing moves."""
    import cmlgraph.core.transfer as transfer
    from cmlgraph.backbones.gnn_plan import host_prepare

    x = graph.x.to_dense() if graph.x.is_sparse else graph.x
    g = GraphInput(x, graph.edge_index, torch.tensor([4, 9, 4, 100]), {}, local=True)
    prepare_plan(g, g, "gcn", 2, complete=True)
    plan = host_prepare(g._plans[("gcn", 2)], x, (), (0, 1))
    copies: list[torch.dtype] = []
    real = transfer.to_device
    monkeypatch.setattr(transfer, "to_device", lambda t, device: copies.append(t.dtype) or real(t, device))
    same = plan_to(plan, x)
    assert copies == [] and same.memo["prev_level"] is plan.memo["prev_level"]
    assert same.memo["host/csr/1"] is plan.memo["host/csr/1"]
    moved = plan_to(plan, torch.empty(x.shape, device="meta"))
    assert sorted(copies, key=str) == [torch.float32, torch.int64]  # was about 11 copies
    pairs = [(moved.memo[k], plan.memo[k]) for k in ("prev_level", "level")] + [
        (getattr(a, f), getattr(b, f)) for a, b in [*zip(moved.mats[1:], plan.mats[1:], strict=True),
                                                    (moved.memo["first_global"], plan.memo["first_global"])]
        for f in ("rows", "cols", "vals")]
    csr, host_csr = moved.memo["host/csr/1"], plan.memo["host/csr/1"]
    pairs += [(csr.crow_indices(), host_csr.crow_indices()), (csr.values(), host_csr.values())]
    assert all(a.device.type == "meta" and a.shape == b.shape and a.dtype == b.dtype for a, b in pairs)


def test_to_device_all_sends_each_dtype_once_and_splits_it_back(monkeypatch):
    """Each dtype's tensors travel as one concatenation and come back as views in their shapes, values intact
    (a stand-in copy on the CPU shows them); tensors on the device already are not copied."""
    import cmlgraph.core.transfer as transfer

    sent: list[torch.Tensor] = []
    monkeypatch.setattr(transfer, "to_device", lambda t, device: sent.append(t) or t.clone())
    here = torch.empty(2, device="meta")
    parts = [torch.arange(6).view(2, 3), torch.rand(4), torch.empty(0, dtype=torch.long), here, torch.tensor([7]),
             torch.rand(1, 2)]
    out = transfer.to_device_all(parts, "meta")
    assert len(sent) == 2 and {t.dtype for t in sent} == {torch.int64, torch.float32}
    assert out[3] is here
    for a, b in zip(out, parts, strict=True):
        if b is not here:
            assert a.shape == b.shape and torch.equal(a, b)
