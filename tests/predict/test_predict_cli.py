"""`cmlgraph predict` / `cmlgraph embed` round trips through files, on a registered and on a saved custom graph."""

from __future__ import annotations

import csv

import networkx as nx
import numpy as np
import pytest

import cmlgraph
from cmlgraph.cli import main
from cmlgraph.graphs import load_graph


def _cli(args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_round_trip_through_csv(maml_run, tmp_path):
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n5,cat\n17,dog\n23,cat\n40,bird\n")
    out = tmp_path / "out" / "predictions.csv"
    assert _cli(["predict", maml_run, "--support", support, "--out", out]) == 0
    rows = _read(out)
    assert list(rows[0]) == ["node", "prediction", "p_bird", "p_cat", "p_dog"] and len(rows) == 296
    assert {r["node"] for r in rows}.isdisjoint({"5", "17", "23", "40"})
    want = cmlgraph.adapt(maml_run, None, {5: "cat", 17: "dog", 23: "cat", 40: "bird"})
    assert [r["prediction"] for r in rows] == want.labels and [int(r["node"]) for r in rows] == want.nodes
    probs = np.array([[float(r[f"p_{c}"]) for c in ("bird", "cat", "dog")] for r in rows])
    np.testing.assert_allclose(probs, want.probabilities, rtol=1e-5, atol=1e-6)


def test_predict_on_a_saved_custom_graph_with_its_own_node_ids(maml_run, tmp_path):
    base = load_graph("synthetic", num_nodes=300, num_classes=15)
    g = nx.Graph()
    names = [f"user{i:03d}" for i in range(300)]
    for i, name in enumerate(names):
        g.add_node(name, x=base.x[i].numpy(), y=f"group{int(base.y[i])}")
    g.add_edges_from((names[u], names[v]) for u, v in base.edge_index.t().tolist())
    custom = cmlgraph.from_networkx(g, name="people")
    path = custom.save(tmp_path / "people.npz")
    support = tmp_path / "labels.csv"
    support.write_text("node,label\nuser005,a\nuser017,b\nuser023,a\n")
    out = tmp_path / "pred.csv"
    assert _cli(["predict", maml_run, "--graph", path, "--support", support, "--out", out]) == 0
    rows = _read(out)
    assert rows[0]["node"] == "user000" and len(rows) == 297 and {r["prediction"] for r in rows} <= {"a", "b"}
    # the same nodes by index on the registered graph give the same predictions (same features and edges)
    ref = cmlgraph.adapt(maml_run, None, {5: "a", 17: "b", 23: "a"})
    assert [r["prediction"] for r in rows] == ref.labels


def test_predict_bad_files_exit_with_one_line(maml_run, tmp_path, capsys):
    support = tmp_path / "labels.csv"
    support.write_text("id,class\n1,a\n")
    assert _cli(["predict", maml_run, "--support", support, "--out", tmp_path / "o.csv"]) == 2
    assert "needs a header row `node,label`" in capsys.readouterr().err
    support.write_text("node,label\n1,a\n1,b\n")
    assert _cli(["predict", maml_run, "--support", support, "--out", tmp_path / "o.csv"]) == 2
    assert "listed twice with different labels" in capsys.readouterr().err
    support.write_text("node,label\n1,a\nx9,b\n")
    assert _cli(["predict", maml_run, "--support", support, "--out", tmp_path / "o.csv"]) == 2
    assert "1 support node id is not a node of graph 'synthetic'" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_predict_on_a_run_of_an_in_memory_graph_says_how_to_pass_it(tmp_path, capsys):
    """A run from ``cmlgraph.fit(FewShotGraph)`` does not store its graph: predict says to save and pass it (a
    fresh user got "unknown dataset 'zoo'"), after first checking the support file exists."""
    base = load_graph("synthetic", num_nodes=300, num_classes=15)
    zoo = cmlgraph.from_arrays(base.edge_index, base.x, base.y.tolist(), name="zoo")
    run, _ = cmlgraph.fit(zoo, ways=3, shots=2, queries=4, steps=2, val_every=2, val_tasks=2, test_tasks=3,
                          runs_dir=str(tmp_path / "runs"))
    from cmlgraph.domains.graph import CUSTOM_GRAPHS

    CUSTOM_GRAPHS.pop("zoo")  # as in a new process: the in-memory graph is gone
    out = tmp_path / "p.csv"
    assert _cli(["predict", run, "--support", tmp_path / "missing.csv", "--out", out]) == 2
    assert "--support" in (err := capsys.readouterr().err) and "no such file" in err
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n1,x\n2,y\n")
    assert _cli(["predict", run, "--support", support, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "in-memory graph 'zoo'" in err and "graph.save('zoo.npz')" in err and "--graph zoo.npz" in err
    assert "`cmlgraph.adapt(RUN_DIR, graph, support)`" in " ".join(err.split())  # a function that exists
    assert _cli(["predict", run, "--graph", zoo.save(tmp_path / "zoo.npz"), "--support", support, "--out", out]) == 0
    assert len(_read(out)) == 298 and not err.count("\n") > 1


def test_embed_cli_writes_the_api_result(maml_run, tmp_path):
    out = tmp_path / "emb.npy"
    assert _cli(["embed", maml_run, "--out", out]) == 0
    emb = np.load(out, allow_pickle=False)
    assert emb.shape == (300, 64)
    np.testing.assert_array_equal(emb, cmlgraph.embed(maml_run))


def test_train_and_predict_on_a_graph_file(tmp_path):
    path = load_graph("synthetic", num_nodes=300, num_classes=15).save(tmp_path / "syn.npz")
    assert _cli(["train", "--graph", path, "--ways", "3", "--shots", "2", "--queries", "4", "--steps", "2",
                 "--val-every", "2", "--test-tasks", "3", "--runs-dir", tmp_path / "runs", "--name", "f",
                 "--quiet"]) == 0
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n1,x\n2,y\n")
    assert _cli(["predict", tmp_path / "runs" / "f", "--support", support, "--out", tmp_path / "p.csv"]) == 0
    assert len(_read(tmp_path / "p.csv")) == 298
