"""Graphs as users have them (issue 12): settings given at fit time reach the graph, default splits fit ``ways``,
unlabelled source nodes stay unlabelled, ``missing_label`` is explained, undirected networkx graphs are not
called directed, features are preprocessed, and ``auto`` picks the faster exact mode."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cmlgraph
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import from_arrays, from_networkx, load_graph
from cmlgraph.graphs.auto_mode import choose_mode
from cmlgraph.graphs.episodes import EpisodeSampler
from cmlgraph.graphs.features import default_features, preprocess, with_features
from cmlgraph.graphs.fit_classes import default_split, fit_graph
from tests.conftest import unscaled_graph

FAST = dict(steps=2, val_every=1, val_tasks=4, test_tasks=8, meta_batch=2, hidden=8)


def _graph(counts, names=None, seed=0, features=8):
    rng = np.random.default_rng(seed)
    labels = [names[i] if names else i for i, c in enumerate(counts) for _ in range(c)]
    n = len(labels)
    ei = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    return ei, rng.normal(size=(n, features)), labels


def test_fit_drops_small_class_by_user_label_and_trains(tmp_path: Path) -> None:
    """Fault 1: ``fit(graph, ways=3, shots=2, queries=3)`` on a graph built without them, one class of 3 nodes."""
    ei, x, y = _graph([10, 10, 10, 10, 3, 10, 10, 10, 10, 10], names=list("abcdefghij"))
    g = from_arrays(ei, x, y, name="fault1")
    with pytest.warns(UserWarning, match=r"dropped 1 class with fewer than shots\+queries=5 .*'e' \(3 nodes\)"):
        run_dir, summary = cmlgraph.fit(g, ways=3, shots=2, queries=3, runs_dir=str(tmp_path), **FAST)
    assert any("'e' (3 nodes)" in n for n in summary["notes"])
    assert summary["num_tasks"] == 8
    # summary.json names the splits' classes by the user's labels beside the internal ids (0..C-1, sorted labels)
    labels = summary["class_labels"]
    assert sorted(sum(labels.values(), [])) == [c for c in "abcdefghij" if c != "e"]
    assert {k: ["abcdefghij"[i] for i in ids] for k, ids in summary["classes"].items()} == labels
    assert json.loads((run_dir / "summary.json").read_text())["class_labels"] == labels
    fitted = fit_graph(g, 3, 2, 3)
    assert 4 not in sum(fitted.splits.values(), []) and int((fitted.y == 4).sum()) == 0
    assert int((g.y == 4).sum()) == 3  # the user's graph is not changed


def test_a_saved_graph_trains_from_the_cli_as_it_does_in_python(tmp_path: Path, capsys) -> None:
    """``cmlgraph train --graph FILE.npz`` fits the saved graph to the episode settings like ``fit`` does (a fresh
    user saw the CLI fail on "class 9 (3 nodes)" where ``fit`` dropped the class by its label "yak"); the console
    shows the dropped class once, as a note, with no second copy as a Python warning."""
    from cmlgraph.cli import main

    ei, x, y = _graph([10, 10, 10, 10, 3, 10, 10, 10, 10, 10], names=["ant", "bee", "cat", "dog", "yak", "elk",
                                                                      "fox", "gnu", "hen", "owl"])
    path = from_arrays(ei, x, y, name="zoo").save(tmp_path / "zoo.npz")
    args = ["train", "--graph", str(path), "--ways", "3", "--shots", "2", "--queries", "3", "--steps", "2",
            "--val-every", "1", "--test-tasks", "8", "--hidden", "8", "--runs-dir",
            str(tmp_path / "runs"), "--name", "cli", "--quiet"]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as end:
        warnings.simplefilter("always")
        main(args)
    assert end.value.code == 0
    assert not [w for w in caught if "yak" in str(w.message)]
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("'yak' (3 nodes)") == 1 and "note: dropped 1 class" in out
    summary = json.loads((tmp_path / "runs" / "cli" / "summary.json").read_text())
    assert any("'yak' (3 nodes)" in n for n in summary["notes"])
    assert "yak" not in sum(summary["class_labels"].values(), []) and len(summary["classes"]["test"]) >= 3


def test_a_quiet_fit_warns_at_the_users_line(tmp_path: Path) -> None:
    """Without a console, the dropped class is a Python warning attributed to the caller, not to cmlgraph."""
    ei, x, y = _graph([10, 10, 10, 10, 3, 10, 10, 10, 10, 10], names=list("abcdefghij"))
    with pytest.warns(UserWarning, match="dropped 1 class") as record:
        cmlgraph.fit(from_arrays(ei, x, y, name="quiet"), ways=3, shots=2, queries=3, runs_dir=str(tmp_path),
                     **FAST)
    assert [Path(w.filename).name for w in record if "dropped" in str(w.message)] == [Path(__file__).name]


def test_fit_errors_name_user_labels_and_python_arguments() -> None:
    ei, x, y = _graph([6, 6, 6, 6], names=["cat", "dog", "eel", "fox"])
    g = from_arrays(ei, x, y, split={"train": [0, 1], "val": [], "test": [2, 3]})
    with pytest.raises(ConfigError) as err:
        fit_graph(g, 3, 2, 3)
    msg = str(err.value)
    assert "'train' split has 2 classes ('cat', 'dog') but ways=3" in msg and "use ways <= 2" in msg
    assert "--" not in msg


def test_a_graph_with_too_few_classes_to_meta_train_names_the_training_free_route(tmp_path: Path) -> None:
    """Two classes cannot give disjoint train and test classes, not even for a training-free run of ``fit``; the
    refusal names what labels such a graph: ``predict_with_method``, which needs no split (a new-user trial)."""
    ei, x, y = _graph([20, 20], names=["yes", "no"])
    with pytest.raises(ConfigError) as err:
        cmlgraph.fit(from_arrays(ei, x, y, name="two-classes"), ways=2, algo="sgc-proto", runs_dir=str(tmp_path))
    text = str(err.value)
    assert "cmlgraph.predict_with_method('sgc-proto', graph, support)" in text
    assert "--" not in text  # the Python API's words (tests/reliability/test_user_graph_properties.py)
    support = {0: "yes", 1: "yes", 20: "no", 21: "no"}
    assert len(cmlgraph.predict_with_method("sgc-proto", from_arrays(ei, x, y), support).nodes) == 36


def test_default_split_fits_ways() -> None:
    """Fault 2: 12 classes and ways=3 give a 6/3/3 default split, not 8/2/2."""
    assert default_split(12, 3) == "6/3/3"
    assert default_split(12, None) == "8/2/2"
    ei, x, y = _graph([8] * 12)
    g = from_arrays(ei, x, y)
    assert [len(g.splits[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    fitted = fit_graph(g, 3, 2, 3)
    assert [len(fitted.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert default_split(7, 3) == "4/0/3"  # 2·ways <= C < 3·ways: val empty, validation on train classes
    with pytest.raises(ConfigError, match=r"needs at least 6 \(disjoint train and test classes") as err:
        fit_graph(from_arrays(*_graph([8] * 5)), 3, 2, 3)
    assert "use ways <= 2" in str(err.value)


def test_explicit_split_at_fit_time_reaches_the_graph() -> None:
    ei, x, y = _graph([8] * 9)
    fitted = fit_graph(from_arrays(ei, x, y), 2, 2, 3, split="5/2/2", seed=1)
    assert [len(fitted.splits[s]) for s in ("train", "val", "test")] == [5, 2, 2]


def test_a_split_mapping_lists_the_users_labels_in_fit_and_in_from_arrays(tmp_path: Path) -> None:
    """A new-user trial: ``fit(split={...})`` was refused ("expected str | None") although fit's own errors suggest
    a mapping, and a mapping had to use ids 0..C-1 the user never saw. Labels are read as labels; ids still work
    where they are no labels; a mapping that reads differently both ways is refused, not guessed."""
    names = [f"topic{i}" for i in range(8)]
    ei, x, y = _graph([8] * 8, names=names)
    split = {"train": names[:4], "val": names[4:6], "test": names[6:]}
    g = from_arrays(ei, x, y, split=split)
    assert g.splits == {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]}
    assert from_arrays(ei, x, y, split={"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]}).splits == g.splits
    ei, x, tens = _graph([8] * 8, names=[10 * (i + 1) for i in range(8)])  # int labels that are no ids
    assert from_arrays(ei, x, tens, split={"train": [10, 20, 30, 40], "val": [50, 60], "test": [70, 80]}
                       ).splits == g.splits
    ei, x, ones = _graph([8] * 8, names=list(range(1, 9)))  # labels 1..8: [1, 2, 3] are labels and other ids
    with pytest.raises(ConfigError, match="ambiguous: 1 is a label of this graph .class id 0"):
        from_arrays(ei, x, ones, split={"train": [1, 2, 3], "test": [4, 5, 6]})
    ei, x, y = _graph([8] * 8, names=names)
    run, summary = cmlgraph.fit(from_arrays(ei, x, y, name="labelled-split"), ways=2, shots=2, queries=3,
                                runs_dir=str(tmp_path), split={"train": names[2:6], "val": names[:2],
                                                               "test": names[6:]}, **FAST)
    assert summary["num_tasks"] == 8
    fitted = fit_graph(from_arrays(ei, x, y), 2, 2, 3, split={"train": names[2:6], "val": names[:2],
                                                               "test": names[6:]})
    assert fitted.splits == {"train": [2, 3, 4, 5], "val": [0, 1], "test": [6, 7]}
    with pytest.raises(ConfigError, match="give 'train' and 'test'"):
        cmlgraph.fit(from_arrays(ei, x, y, name="bad-split"), ways=2, runs_dir=str(tmp_path), split={"tran": [0]})
    # a label that is none of the graph's, or one listed twice, is named as the user wrote it (a second trial got
    # "'train' must list integer class ids" for a typo in 'test', and an internal id for an overlap)
    with pytest.raises(ConfigError, match=r"no label of this graph \(test: 'nosuch'\); its labels: 'topic0'"):
        from_arrays(ei, x, y, split={"train": names[:4], "test": ["topic6", "nosuch"]})
    with pytest.raises(ConfigError, match=r"lists 'topic0' in both 'train' and 'test'"):
        from_arrays(ei, x, y, split={"train": names[:4], "test": ["topic0", "topic6"]})
    with warnings.catch_warnings():  # classes the user listed: said in the notes, not warned about
        warnings.simplefilter("error")
        fitted = fit_graph(from_arrays(ei, x, y), 2, 2, 3, split={"train": names[2:6], "val": names[:2],
                                                                   "test": names[6:]})
    assert any("re-split" in n for n in fitted.notes)


@pytest.mark.slow
def test_citeseer_source_unlabelled_nodes_are_unlabelled(shared_root: Path) -> None:
    """Fault 3: CiteSeer's 15 test ids without features and label are unlabelled, not class 0."""
    g = load_graph("citeseer", shared_root)
    assert int((g.y < 0).sum()) == 15
    assert g.class_counts()[0] == 249
    assert any(n.startswith("15 of 3327 nodes have no label") for n in g.notes)
    cora = load_graph("cora", shared_root)
    assert int((cora.y < 0).sum()) == 0 and not any("have no label" in n for n in cora.notes)


@pytest.mark.parametrize("blank", [None, float("nan"), "", "  "])
def test_a_node_without_a_label_is_unlabelled_and_said_in_a_warning(blank) -> None:
    """``""`` (a CSV's empty cell) became a class of its own with no word (a new-user trial), while ``adapt``
    read it as missing; None and NaN were only in ``graph.notes``, where the docs promise a warning too."""
    ei, x, y = _graph([10, 10, 10], names=["a", "b", "c"])
    y = [blank] * 4 + y[4:]
    with pytest.warns(UserWarning, match="4 of 30 nodes have no label .None, NaN or a blank string.: they are "
                                         "unlabelled"):
        g = from_arrays(ei, x, y)
    assert g.info["class_names"] == ["a", "b", "c"] and int((g.y < 0).sum()) == 4
    assert any(n.startswith("4 of 30 nodes have no label") for n in g.notes)


def test_missing_label_is_counted_and_can_be_kept() -> None:
    """Fault 4: labels coded -1/+1."""
    ei, x, _ = _graph([20, 20])
    labels = [-1] * 20 + [1] * 20
    with pytest.warns(UserWarning, match=r"20 nodes have the label -1 and were treated as unlabelled "
                                         r"\(missing_label=-1\); pass missing_label=None"):
        g = from_arrays(ei, x, labels)
    assert g.info["class_names"] == [1] and any("missing_label=None" in n for n in g.notes)
    with pytest.raises(ConfigError) as err:
        fit_graph(g, 2, 3, 10)
    assert "missing_label=None" in str(err.value) and "ways <= 0" not in str(err.value)
    assert "ways <= 1" not in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing treated as unlabelled: no warning
        kept = from_arrays(ei, x, labels, missing_label=None)
    assert kept.info["class_names"] == [-1, 1]
    with pytest.raises(ConfigError) as err:  # kept, but 2 classes cannot give disjoint 2-way train and test
        fit_graph(kept, 2, 3, 10)
    assert "the graph has 2 classes" in str(err.value) and "needs at least 4" in str(err.value)
    assert "ways <= 1" not in str(err.value) and "missing_label" not in str(err.value)
    G = nx.Graph()
    for i, lab in enumerate(labels):
        G.add_node(i, x=[1.0], y=lab)
    with pytest.warns(UserWarning, match="20 nodes have the label -1"):  # the same default for every entry point
        assert from_networkx(G).info["class_names"] == [1]


def test_undirected_networkx_is_not_reported_directed() -> None:
    """Fault 5."""
    G = nx.karate_club_graph()
    for v in G.nodes:
        G.nodes[v]["x"], G.nodes[v]["y"] = [1.0, float(v)], G.nodes[v]["club"]
    g = from_networkx(G, split={"train": [0], "test": [1]})
    assert g.num_edges == 2 * G.number_of_edges() and not any("directed" in n for n in g.notes)
    G.add_edge(0, 0)
    assert any("removed 1 self loops" in n for n in from_networkx(G, split={"train": [0], "test": [1]}).notes)
    D = nx.DiGraph(G.edges())
    for v in D.nodes:
        D.nodes[v].update(G.nodes[v])
    assert any("directed: added" in n for n in from_networkx(D, split={"train": [0], "test": [1]}).notes)


def test_feature_preprocessing_modes() -> None:
    """Fault 6, the setting: row sums to 1, standard has zero mean and unit variance, sparse stays sparse."""
    x = torch.tensor([[10.0, 30.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 40.0]])
    row = preprocess(x, "row")
    assert torch.allclose(row.sum(1), torch.tensor([1.0, 0.0, 1.0]))
    std = preprocess(x, "standard")
    assert torch.allclose(std.mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(std.std(0, unbiased=False), torch.ones(3), atol=1e-5)
    sparse = preprocess(x.to_sparse(), "row")
    assert sparse.is_sparse and torch.allclose(sparse.to_dense(), row)
    with pytest.raises(ConfigError, match="use one of raw, row, standard"):
        preprocess(x, "l2")


def test_feature_defaults() -> None:
    ei, x, y = _graph([5, 5, 5])
    assert default_features(from_arrays(ei, x, y)) == "standard"
    assert default_features(from_arrays(ei, sp.csr_matrix(np.abs(x)), y)) == "row"
    assert default_features(from_arrays(ei, x, y, name="cora")) == "standard"  # a user's graph named like one
    assert default_features(load_graph("synthetic", num_nodes=200, num_classes=10)) == "raw"


@pytest.mark.slow
def test_planetoid_features_row_normalised(shared_root: Path) -> None:
    cora = load_graph("cora", shared_root)
    assert default_features(cora) == "row"
    rowed, mode = with_features(cora, None)
    assert mode == "row" and torch.allclose(torch.sparse.sum(rowed.x, 1).to_dense(), torch.ones(cora.num_nodes))
    assert cora.x is not rowed.x and cora.edge_index is rowed.edge_index


def test_unscaled_features_warn_and_the_default_trains(tmp_path: Path) -> None:
    """Fault 6: features in the tens, raw, sit at chance and say so on the published (random-init) model; the custom
    default (standard) learns, and so does the scale-free default model of issue 17 on the raw features."""
    g = unscaled_graph("scaled")
    settings = dict(ways=2, shots=3, queries=5, steps=12, val_every=3, val_tasks=10, test_tasks=40, meta_batch=2,
                    hidden=16, runs_dir=str(tmp_path))
    legacy = dict(init="random", normalize=False, head_init="learned")
    with pytest.warns(RuntimeWarning, match=r"diverging.*features raw .*inner lr 0.5") as caught:
        _, raw = cmlgraph.fit(g, features="raw", **legacy, **settings)
    # fit's warnings speak its keyword arguments, not the command line's flags
    assert not any("--" in str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    assert any("diverging" in w for w in raw["warnings"]) and raw["features"] == "raw"
    _, std = cmlgraph.fit(g, **legacy, **settings)
    assert std["features"] == "standard" and not any("diverging" in w for w in std["warnings"])
    assert std["mean"] > raw["mean"] + 0.1
    # the default model (PCA start, L2-normalised features, prototype heads) does not care about the scale
    _, scale_free = cmlgraph.fit(g, features="raw", **settings)
    assert not any("diverging" in w for w in scale_free["warnings"])
    assert scale_free["mean"] > raw["mean"] + 0.1


def test_auto_mode_by_tree_size() -> None:
    """Fault 8: GCN's computation trees beat the whole graph on a small graph; GAT's k-hop subgraph does not
    when the episode's neighbourhood covers the graph; above the threshold khop is always used."""
    g = load_graph("synthetic", num_nodes=600, num_classes=12)
    sampler = EpisodeSampler(g.y, g.splits["train"], 5, 3, 10, torch.Generator())
    assert choose_mode(g, sampler, hops=2, trees=True, threshold=20_000)[0] == "khop"
    # SGC's whole graph is one cached propagation: trees lose once they cover most of the graph
    assert choose_mode(g, sampler, hops=2, trees=True, threshold=20_000, kind="sgc")[0] == "full"
    mode, why = choose_mode(g, sampler, hops=2, trees=False, threshold=20_000)
    assert mode == "full" and "neighbourhood" in why
    assert choose_mode(g, sampler, hops=2, trees=False, threshold=100)[0] == "khop"
    ring = from_arrays(np.stack([np.arange(600), (np.arange(600) + 1) % 600]), np.ones((600, 2)),
                       [i % 12 for i in range(600)], split="6/3/3")
    sampler = EpisodeSampler(ring.y, ring.splits["train"], 2, 1, 1, torch.Generator())
    assert choose_mode(ring, sampler, hops=2, trees=False, threshold=20_000)[0] == "khop"


def test_repr_is_short() -> None:
    g = load_graph("synthetic", num_nodes=300, num_classes=10)
    text = repr(g)
    assert text.startswith("FewShotGraph(name='synthetic', nodes=300, edges=") and "classes=10 [train=6, val=2, " \
        "test=2]" in text and "notes=" in text
    assert "tensor" not in text and len(text) < 200


def test_old_run_folders_keep_raw_features() -> None:
    """A config.yaml written before data.features existed was trained on raw features; eval/resume keep them."""
    from cmlgraph.config import Config
    from cmlgraph.graphs.features import pin_legacy_features

    assert pin_legacy_features(Config(), {"data": {"task": "graph", "graph": "cora"}}).data.features == "raw"
    assert pin_legacy_features(Config(), {"data": {"task": "graph", "features": None}}).data.features is None
