"""``cmlgraph predict --method NAME``: a training-free method answers a user's task with no run folder."""

from __future__ import annotations

import csv

import pytest
import torch

import cmlgraph
from cmlgraph.cli import main
from cmlgraph.errors import ConfigError
from cmlgraph.predict import predict_with_method


def _cli(args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def graph():
    g = cmlgraph.load_graph("synthetic", num_nodes=200, num_classes=10)
    path = g.save(__import__("tempfile").mkdtemp() + "/tiny.npz")
    return g, path


@pytest.mark.parametrize("method", ["sgc-proto", "label-prop", "sgc-logreg"])
def test_predict_method_without_a_run_folder(tmp_path, graph, method):
    g, path = graph
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n3,a\n9,b\n14,a\n20,b\n")
    out = tmp_path / "pred.csv"
    assert _cli(["predict", "--method", method, "--graph", path, "--support", support, "--out", out]) == 0
    rows = _read(out)
    assert list(rows[0]) == ["node", "prediction", "p_a", "p_b"] and len(rows) == 196
    assert {r["node"] for r in rows}.isdisjoint({"3", "9", "14", "20"})
    want = predict_with_method(method, g, {3: "a", 9: "b", 14: "a", 20: "b"})
    assert [r["prediction"] or None for r in rows] == want.labels


def test_sgc_proto_prediction_equals_the_hand_rule(graph):
    """The prediction is the nearest class mean (cosine) on S^2 X of the run's feature preprocessing."""
    from cmlgraph.baselines.propagation import sym_norm_propagate
    from cmlgraph.graphs.features import with_features

    g, _ = graph
    pred = predict_with_method("sgc-proto", g, {3: "a", 9: "b", 14: "a"}, prop_steps=2)
    x, _ = with_features(g, None)
    z = torch.nn.functional.normalize(sym_norm_propagate(x.x, g.edge_index, g.num_nodes, 2), dim=1)
    means = torch.stack([z[[3, 14]].mean(0), z[[9]].mean(0)])
    hand = (z @ torch.nn.functional.normalize(means, dim=1).T).argmax(1)
    assert pred.labels == [("a", "b")[int(hand[i])] for i in pred.nodes]


def test_features_choose_the_preprocessing_and_auto_is_refused(tmp_path, graph):
    """``--features`` (session 27): a ``--algo sgc-proto`` run may choose standardised features (``auto``); the
    predict command reproduces it with ``--features standard``. ``auto`` needs validation tasks, which predict has
    not: refused with the way to the run's choice."""
    from cmlgraph.baselines.propagation import sym_norm_propagate
    from cmlgraph.graphs.features import with_features

    g, path = graph
    support = {3: "a", 9: "b", 14: "a"}
    pred = predict_with_method("sgc-proto", g, support, prop_steps=2, features="standard")
    x, _ = with_features(g, "standard")
    z = torch.nn.functional.normalize(sym_norm_propagate(x.x, g.edge_index, g.num_nodes, 2), dim=1)
    means = torch.stack([z[[3, 14]].mean(0), z[[9]].mean(0)])
    hand = (z @ torch.nn.functional.normalize(means, dim=1).T).argmax(1)
    assert pred.labels == [("a", "b")[int(hand[i])] for i in pred.nodes]
    raw = predict_with_method("sgc-proto", g, support, prop_steps=2, features="raw")
    assert not torch.allclose(torch.as_tensor(raw.probabilities), torch.as_tensor(pred.probabilities))
    with pytest.raises(ConfigError, match="auto chooses on a run's validation tasks"):
        predict_with_method("sgc-proto", g, support, features="auto")
    csv_in = tmp_path / "labels.csv"
    csv_in.write_text("node,label\n3,a\n9,b\n14,a\n")
    out = tmp_path / "pred.csv"
    assert _cli(["predict", "--method", "sgc-proto", "--graph", path, "--support", csv_in, "--out", out,
                 "--prop-steps", 2, "--features", "standard"]) == 0
    assert [r["prediction"] for r in _read(out)] == pred.labels


def test_label_prop_leaves_unreached_nodes_unanswered(graph):
    g, _ = graph
    # said in Python too, not only by the CLI (a new-user trial scored the None labels as answers)
    with pytest.warns(RuntimeWarning, match=r"\d+ of \d+ nodes have no path to a labelled node within label-prop"):
        pred = predict_with_method("label-prop", g, {3: "a", 9: "b"}, prop_steps=1)
    assert pred.unanswered > 0 and pred.labels.count(None) == pred.unanswered
    blank = [i for i, lab in enumerate(pred.labels) if lab is None]
    assert torch.allclose(torch.as_tensor(pred.probabilities[blank]), torch.full((len(blank), 2), 0.5))


def test_gcl_probe_predicts_after_pretraining(graph):
    g, _ = graph
    pred = predict_with_method("gcl-probe", g, {3: "a", 9: "b", 14: "a", 20: "b"}, pretrain_epochs=2)
    assert len(pred.labels) == 196 and set(pred.labels) <= {"a", "b"}


def test_bad_inputs_give_clear_errors(tmp_path, graph, capsys):
    _, path = graph
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n3,a\n9,b\n")
    out = tmp_path / "o.csv"
    cases = [
        (["predict", "--support", support, "--out", out], "give a run folder"),
        (["predict", "--method", "sgc-proto", "--support", support, "--out", out], "needs --graph"),
        (["predict", "--method", "magic", "--graph", path, "--support", support, "--out", out],
         "not a training-free method"),
        (["predict", "--method", "sgc-proto", "--graph", path, "--prop-alpha", "0.2", "--support", support,
          "--out", out], "sgc-proto takes no --prop-alpha"),
        (["predict", "--method", "label-prop", "--graph", path, "--prop-alpha", "2", "--support", support,
          "--out", out], "--prop-alpha 2.0: must be in [0, 1)"),
        (["predict", "--method", "sgc-proto", "--graph", path, "--support", tmp_path / "none.csv", "--out", out],
         "no such file"),
    ]
    for args, message in cases:
        assert _cli(args) == 2, args
        assert message in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ConfigError, match="not a training-free method"):
        predict_with_method("maml", path, {3: "a", 9: "b"})
