"""cmlgraph.adapt: the run's own test-time rule on a user's support set, and every bad input's message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cmlgraph
from cmlgraph.errors import CmlgraphError, ConfigError, DataError
from cmlgraph.graphs import episodes_from_state
from cmlgraph.train.io import load_torch

from .conftest import train_tiny


def _episode_accuracies(run, label=str):
    """adapt() on each saved test episode's support, scored on its queries; and the run's own per-task scores."""
    scores = load_torch(run / "scores.pt")["scores"].tolist()
    mine = []
    for ep in episodes_from_state(load_torch(run / "test_episodes.pt")):
        classes = [label(int(c)) for c in ep.classes]  # episode order: class classes[i] is head row i
        support = {int(n): classes[int(y)] for n, y in zip(ep.support, ep.support_y, strict=True)}
        pred = cmlgraph.adapt(run, None, support, classes=classes)
        assert all(type(lab) is type(classes[0]) for lab in pred.labels)
        where = {n: i for i, n in enumerate(pred.nodes)}
        assert not set(support) & set(where)  # support nodes are not predicted
        assert len(pred.nodes) == 300 - len(support)
        np.testing.assert_allclose(pred.probabilities.sum(1), 1.0, rtol=1e-5)
        hits = [pred.labels[where[int(n)]] == classes[int(y)] for n, y in zip(ep.query, ep.query_y, strict=True)]
        mine.append(sum(hits) / len(hits))
    return mine, scores


@pytest.mark.parametrize(("algo", "extra"), [("maml", {}), ("anil", {}), ("boil", {}), ("maml++", {}),
                                             ("sharp-maml", {}), ("protonet", {}),
                                             ("maml", {"subgraph": "khop", "gnn": "gcn"}),
                                             ("maml", {"features": "standard"}),
                                             ("gmeta", {"hidden": 16})])
# AMM-GNN is left out: its per-task feature modulation is drawn from the task's own nodes (support and query), and
# a prediction task's queries are every other node, so it is a different task than any saved episode by design.
def test_adapt_reproduces_the_runs_own_test_accuracy(tmp_path, algo, extra):
    run = train_tiny(tmp_path, algo, **extra)
    mine, scores = _episode_accuracies(run, label=lambda c: f"class-{c}")
    assert mine == pytest.approx(scores, abs=1e-6)
    assert 0 < np.mean(scores) < 1  # a real score, not a degenerate one


def test_labels_of_strings_come_back_as_strings_and_any_ways(maml_run):
    support = {0: "b", 1: "a", 2: "c", 3: "d", 4: "a"}  # 4 classes on a 3-way run: the averaged head
    pred = cmlgraph.adapt(maml_run, None, support)
    assert pred.classes == ["a", "b", "c", "d"] and pred.probabilities.shape == (295, 4)
    assert set(pred.labels) <= {"a", "b", "c", "d"} and all(isinstance(x, str) for x in pred.labels)
    frame = pred.to_pandas()
    assert list(frame.columns) == ["node", "prediction", "p_a", "p_b", "p_c", "p_d"] and len(frame) == 295


def test_bad_inputs_name_the_problem(maml_run, tmp_path):
    # what cmlgraph.fit returns, (run_dir, summary), is accepted whole; anything else is a clear error
    whole = cmlgraph.adapt((maml_run, {"mean": 0.5}), None, {0: "a", 1: "b"})
    assert whole.labels == cmlgraph.adapt(maml_run, None, {0: "a", 1: "b"}).labels
    with pytest.raises(ConfigError, match="run_dir must be a run folder path, not int"):
        cmlgraph.adapt(3, None, {0: "a", 1: "b"})
    with pytest.raises(ConfigError, match=r"fit\(\) trains on its first argument, a graph: drop task=\.\.\. "):
        cmlgraph.fit("synthetic", task="sinusoid", gnn="gat")
    with pytest.raises(DataError, match="1 support node id is not a node of graph"):
        cmlgraph.adapt(maml_run, None, {0: "a", 99999: "b"})
    with pytest.raises(DataError, match="2 support node ids are not nodes .* they match node ids as text but are "
                                        "strs where the graph's ids are ints: give them as ints"):
        cmlgraph.adapt(maml_run, None, {"0": "a", "1": "b"})
    with pytest.raises(DataError, match="at least 2 classes"):
        cmlgraph.adapt(maml_run, None, {0: "a", 1: "a"})
    with pytest.raises(DataError, match="class 'c' has no support node"):
        cmlgraph.adapt(maml_run, None, {0: "a", 1: "b"}, classes=["a", "b", "c"])
    with pytest.raises(DataError, match="have no label"):
        cmlgraph.adapt(maml_run, None, {0: "a", 1: None, 2: "b"})
    g = cmlgraph.from_arrays([[0, 1], [1, 2]], np.ones((4, 7), np.float32), [0, 1, 0, 1], split="1/0/1")
    with pytest.raises(DataError, match="reads 64-dimensional node features, this graph .* has 7"):
        cmlgraph.adapt(maml_run, g, {0: "a", 1: "b"})
    with pytest.raises(CmlgraphError, match="config.yaml is missing; pass a finished run folder"):
        cmlgraph.adapt(tmp_path, None, {0: "a", 1: "b"})
    (tmp_path / "config.yaml").write_text("data:\n  task: sinusoid\n")
    (tmp_path / "model.pt").write_bytes((maml_run / "model.pt").read_bytes())
    with pytest.raises(ConfigError, match="is a sinusoid run; predict and embed need a node-classification run"):
        cmlgraph.adapt(tmp_path, None, {0: "a", 1: "b"})


def test_frozen_head_algorithm_refuses_another_number_of_classes(tmp_path):
    run = train_tiny(tmp_path, "boil", head_init="learned")
    with pytest.raises(ConfigError, match="keeps the head frozen .* give 3 classes"):
        cmlgraph.adapt(run, None, {0: "a", 1: "b"})


def test_frozen_head_with_prototype_heads_takes_another_number_of_classes(tmp_path):
    """BOIL's head never adapts, but a Proto-MAML head starts from the task's own class means: 2 classes work."""
    run = train_tiny(tmp_path, "boil")  # graph MAML-family default: --head-init proto
    pred = cmlgraph.adapt(run, None, {0: "a", 1: "b", 2: "a", 3: "b"})
    assert pred.classes == ["a", "b"] and set(pred.labels) == {"a", "b"}


@pytest.mark.parametrize("algo", ["gmeta", "ammgnn"])
def test_embed_of_tlp_encoders_has_one_row_per_node(tmp_path, algo):
    emb = cmlgraph.embed(train_tiny(tmp_path, algo, hidden=16))
    assert emb.shape == (300, 16) and np.isfinite(emb).all() and emb.std(0).max() > 0


def test_embed_is_the_extractors_output_for_every_node(maml_run):
    from cmlgraph.core.model import MetaModel
    from cmlgraph.domains.graph import GraphDomain
    from cmlgraph.graphs import GraphInput, load_graph

    emb = cmlgraph.embed(maml_run)
    graph = load_graph("synthetic", num_nodes=300, num_classes=15)
    layers = json.loads((maml_run / "summary.json").read_text())["layers"]  # the depth the run chose
    dom = GraphDomain(graph, 3, 2, 4, gnn="sgc", hidden=64, layers=layers, episodes=False,
                      bias=False)  # the default: --init pca
    model = MetaModel(dom.build_extractor(), 3)
    model.load_state_dict(load_torch(maml_run / "model.pt"))
    model.eval()
    with torch.no_grad():  # the graph default --normalize: the features the heads read have unit length
        ref = torch.nn.functional.normalize(model.extractor(GraphInput(graph.x, graph.edge_index, torch.arange(300))))
    assert emb.shape == (300, 64) == tuple(ref.shape) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, ref.numpy(), rtol=1e-5, atol=1e-6)
