"""The graph domain end to end: every GNN under a CML meta-step, subgraph mode, custom graphs, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cmlgraph
from cmlgraph.algorithms import get_algorithm
from cmlgraph.backbones.gnn_plan import complete_plan
from cmlgraph.config import AlgoConfig
from cmlgraph.core.model import MetaModel, group_of, parameters_of
from cmlgraph.domains.graph import GraphDomain, compute_layout
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import make_synthetic


@pytest.fixture(scope="module")
def small_graph():
    return make_synthetic(num_nodes=400, num_classes=12, seed=0, split="4/4/4")


@pytest.mark.parametrize("gnn", ["gcn", "sgc", "sage", "gat", "gin"])
def test_one_cml_meta_step_reaches_every_parameter(small_graph, gnn):
    domain = GraphDomain(small_graph, ways=3, shots=2, queries=3, gnn=gnn, hidden=16, layers=2)
    torch.manual_seed(0)
    model = MetaModel(domain.build_extractor(), 3, co_depth=1)
    algo = get_algorithm(AlgoConfig(algo="maml", inner_steps=2, inner_lr=0.5, co_depth=1))
    eps = [domain.materialize(r) for r in domain.sample("train", 2, torch.Generator().manual_seed(1))]
    params = parameters_of(model)
    step = algo.meta_gradients(model, params, eps, domain.loss_fn, 0)
    groups = {group_of(k) for k in params}
    assert groups == {"extractor", "head", "co"}
    for k, g in step.grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, k


@pytest.mark.parametrize("gnn", ["gcn", "sgc", "gat"])
def test_khop_mode_equals_full_graph(gnn):
    small_graph = make_synthetic(num_nodes=3000, num_classes=12, avg_degree=2, seed=0, split="4/4/4")
    full = GraphDomain(small_graph, ways=3, shots=2, queries=3, hidden=16, subgraph="full", gnn=gnn)
    khop = GraphDomain(small_graph, ways=3, shots=2, queries=3, hidden=16, subgraph="khop", gnn=gnn)
    # Computation trees read the full graph's normalisation, so L hops suffice; GAT's subgraph needs L as well.
    assert khop.hops == 2 and khop.trees == (gnn != "gat")
    torch.manual_seed(0)
    model = MetaModel(full.build_extractor(), 3, co_depth=0)
    algo = get_algorithm(AlgoConfig(algo="maml", inner_steps=2, inner_lr=0.5, co_depth=0))
    raw = full.sample("test", 1, torch.Generator().manual_seed(2))[0]
    params = parameters_of(model)
    a = algo.meta_gradients(model, params, [full.materialize(raw)], full.loss_fn, 0)
    b = algo.meta_gradients(model, params, [khop.materialize(raw)], khop.loss_fn, 0)
    assert torch.allclose(a.loss.total, b.loss.total, atol=1e-5)
    for k in params:
        # float32 sums in another order: compare relative to the gradient's scale (GAT's reach ~100)
        err = (a.grads[k] - b.grads[k]).abs().max()
        assert err <= 1e-4 * a.grads[k].abs().max() + 1e-5, (k, err)
    support = khop.materialize(raw).support_x
    if khop.trees:
        plan = complete_plan(model.extractor.plan(support))
        assert plan.sizes[0] < small_graph.num_nodes and plan.sizes[-1] == raw.support.numel()
    else:
        assert support.num_nodes < small_graph.num_nodes


def test_dense_enough_sparse_features_are_densified_and_bag_of_words_stays_sparse():
    dense_ish = torch.rand(50, 20).round().to_sparse()
    assert compute_layout(dense_ish).layout == torch.strided
    i = torch.tensor([[0, 5], [1, 7]])
    sparse = torch.sparse_coo_tensor(i, torch.ones(2), (1000, 1000))
    assert compute_layout(sparse).is_sparse


def _toy_arrays(n=240, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    names = np.array([f"class-{c}" for c in range(classes)])
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 8)).astype("float32")
    x[np.arange(n), y] += 3.0
    src = rng.integers(0, n, 4 * n)
    dst = np.where(rng.random(4 * n) < 0.7, rng.permutation(n)[:1].repeat(4 * n), rng.integers(0, n, 4 * n))
    return np.stack([src, dst]), x, names[y], y


def test_custom_graph_from_arrays_trains(tmp_path):
    edges, x, labels, _ = _toy_arrays()
    graph = cmlgraph.from_arrays(edges, x, labels, name="toy-arrays", split="2/2/2")
    run, summary = cmlgraph.fit(graph, ways=2, shots=2, queries=3, steps=3, val_every=3, val_tasks=5,
                                test_tasks=10, runs_dir=str(tmp_path))
    assert (run / "summary.json").is_file() and summary["dataset"] == "toy-arrays"
    assert 0.0 <= summary["mean"] <= 1.0 and summary["num_tasks"] == 10


def test_custom_graph_from_pyg_and_networkx_train(tmp_path):
    import networkx as nx
    from torch_geometric.data import Data

    edges, x, _, y = _toy_arrays(seed=1)
    data = Data(x=torch.tensor(x), edge_index=torch.tensor(edges), y=torch.tensor(y))
    g1 = cmlgraph.from_pyg(data, name="toy-pyg", split="2/2/2")
    G = nx.Graph()
    for i in range(len(y)):
        G.add_node(i, x=x[i], y=int(y[i]))
    G.add_edges_from(edges.T.tolist())
    g2 = cmlgraph.from_networkx(G, name="toy-nx", split="2/2/2")
    for g in (g1, g2):
        _, summary = cmlgraph.fit(g, ways=2, shots=2, queries=3, steps=2, val_every=2, val_tasks=4, test_tasks=6,
                                  runs_dir=str(tmp_path))
        assert summary["num_tasks"] == 6


def test_too_many_ways_for_a_split_names_the_split_and_leaves_no_run_folder(tmp_path):
    edges, x, labels, _ = _toy_arrays()
    graph = cmlgraph.from_arrays(edges, x, labels, name="toy-ways", split="4/1/1")
    with pytest.raises(ConfigError, match="val classes"):
        cmlgraph.fit(graph, ways=2, shots=1, steps=1, runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_setting_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid settings"):
        cmlgraph.make_config(wayz=3)


def test_evaluation_in_graph_batches_equals_one_by_one():
    from cmlgraph.train.evaluate import evaluate

    small_graph = make_synthetic(num_nodes=3000, num_classes=12, avg_degree=4, seed=1, split="4/4/4")
    khop = GraphDomain(small_graph, ways=3, shots=2, queries=3, hidden=16, subgraph="khop", gnn="gcn")
    torch.manual_seed(1)
    model = MetaModel(khop.build_extractor(), 3, co_depth=0)
    algo = get_algorithm(AlgoConfig(algo="maml", inner_steps=2, inner_lr=0.5, co_depth=0))
    raws = khop.sample("test", 6, torch.Generator().manual_seed(3))
    params = parameters_of(model)
    together = evaluate(algo, model, params, khop, raws, batch_size=6)
    alone = evaluate(algo, model, params, khop, raws, batch_size=1)
    assert np.allclose(together["scores"], alone["scores"])
    assert "dagger_mean" in together and np.isclose(together["dagger_mean"], alone["dagger_mean"])


def test_a_collapsed_co_learner_is_counted_not_scored_silently():
    """A co-learner whose output names one class for every query node (here: zero weights, all logits equal)
    scores chance by construction; evaluation counts those tasks (``dagger_one_class_tasks``)."""
    from cmlgraph.train.evaluate import evaluate

    graph = make_synthetic(num_nodes=600, num_classes=9, avg_degree=4, seed=1, split="3/3/3")
    dom = GraphDomain(graph, ways=3, shots=2, queries=3, hidden=8, subgraph="khop", gnn="gcn")
    torch.manual_seed(1)
    model = MetaModel(dom.build_extractor(), 3, co_depth=0)
    algo = get_algorithm(AlgoConfig(algo="maml", inner_steps=1, inner_lr=0.5, co_depth=0))
    raws = dom.sample("test", 4, torch.Generator().manual_seed(3))
    live = evaluate(algo, model, parameters_of(model), dom, raws)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("co."):
                p.zero_()
    dead = evaluate(algo, model, parameters_of(model), dom, raws)
    assert dead["dagger_one_class_tasks"] == 4 and live["dagger_one_class_tasks"] < 4
    assert dead["dagger_mean"] == pytest.approx(1 / 3)  # balanced queries: one class right, two wrong
    assert np.allclose(dead["scores"], live["scores"])  # the meta-learner's score does not depend on φ
