"""`cmlgraph eval` on runs of in-memory graphs, with --graph/--data-root, and the run's remembered data root
(issue 19 item 4)."""

from __future__ import annotations

import json
import os

import pytest

import cmlgraph
from cmlgraph.cli import main
from cmlgraph.config import Config
from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs import load_graph
from cmlgraph.graphs.root import data_root
from cmlgraph.predict import resolve_graph
from cmlgraph.provenance import default_data_root
from cmlgraph.train.reeval import recorded_data_root, reevaluate, run_data_root
from cmlgraph.train.trainer import train


def _cli(args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.fixture()
def zoo_run(tmp_path):
    """A ``cmlgraph.fit`` run on an in-memory graph, as a new process sees it (the graph no longer registered)."""
    from cmlgraph.domains.graph import CUSTOM_GRAPHS

    base = load_graph("synthetic", num_nodes=300, num_classes=15)
    zoo = cmlgraph.from_arrays(base.edge_index, base.x, base.y.tolist(), name="zoo")
    run, summary = cmlgraph.fit(zoo, ways=3, shots=2, queries=4, steps=2, val_every=2, val_tasks=2, test_tasks=6,
                                runs_dir=str(tmp_path / "runs"))
    CUSTOM_GRAPHS.pop("zoo")
    return run, summary, zoo


def test_eval_of_a_fit_run_on_an_in_memory_graph_takes_the_saved_graph(zoo_run, tmp_path, capsys):
    run, summary, zoo = zoo_run
    with pytest.raises(ConfigError, match=r"graph\.save\('zoo\.npz'\).*--graph zoo\.npz") as refused:
        reevaluate(run)  # was: "unknown dataset 'zoo'"
    # the Python call it names exists (it had said "graph=the FewShotGraph in Python", naming no function)
    assert f"`cmlgraph.train.reeval.reevaluate({str(run)!r}, graph=graph)`" in str(refused.value)
    assert f"`cmlgraph eval {run} --graph zoo.npz`" in str(refused.value)  # the run's own path, not RUN_DIR
    path = zoo.save(tmp_path / "zoo.npz")
    res = reevaluate(run, graph=path)
    assert res["num_tasks"] == summary["num_tasks"] and res["mean"] == pytest.approx(summary["mean"], abs=1e-6)
    assert reevaluate(run, graph=zoo)["mean"] == pytest.approx(summary["mean"], abs=1e-6)  # the Python object too
    from cmlgraph.domains.graph import CUSTOM_GRAPHS

    assert "zoo" not in CUSTOM_GRAPHS  # registered only while the run's domain was built
    assert _cli(["eval", run, "--graph", path]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{summary['mean']:.4f}" in out
    # the baseline beside the run's validation, as `cmlgraph train` ends (a new-user trial missed it in eval)
    record = summary["baseline_val"]
    assert f"best validation accuracy {summary['best_val']:.4f} (step {summary['best_step']}); training-free " \
           f"{record['method']}" in out and f"validation tasks: {record['val']:.4f}" in out


def test_eval_refuses_a_graph_the_test_tasks_do_not_belong_to(zoo_run, tmp_path):
    run, _, zoo = zoo_run
    other = load_graph("synthetic", num_nodes=300, num_classes=15, seed=7)
    path = cmlgraph.from_arrays(other.edge_index, other.x, other.y.tolist(), name="zoo").save(tmp_path / "o.npz")
    with pytest.raises(DataError, match="give the graph the run was trained on"):
        reevaluate(run, graph=path)


def test_provenance_records_the_data_root_the_graph_loaders_use(monkeypatch, tmp_path):
    monkeypatch.setenv("CMLGRAPH_DATA", str(tmp_path / "d"))
    assert default_data_root() == str(data_root())
    monkeypatch.delenv("CMLGRAPH_DATA")
    assert default_data_root() == str(data_root())


def test_the_data_root_falls_back_to_the_recorded_one(monkeypatch, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# written by cmlgraph\n# data_root: /from/config/header\ndata:\n  task: graph\n")
    cfg = Config()
    monkeypatch.delenv("CMLGRAPH_DATA", raising=False)
    assert recorded_data_root(run) == "/from/config/header"  # a run killed before its summary
    (run / "summary.json").write_text(json.dumps({"provenance": {"data_root": "/recorded"}}))
    assert run_data_root(run, cfg) == "/recorded"
    assert run_data_root(run, cfg, "/given") == "/given"  # --data-root wins
    monkeypatch.setenv("CMLGRAPH_DATA", "/env")
    assert run_data_root(run, cfg) is None  # the variable applies (data_root(None) reads it)
    cfg.data.data_root = "/in/config"
    assert run_data_root(run, cfg) == "/in/config"


@pytest.mark.slow
def test_eval_finds_a_registered_graph_in_another_shell_and_names_the_fix_when_it_cannot(shared_cora, tmp_path,
                                                                                            monkeypatch, capsys):
    """Trained with CMLGRAPH_DATA set; evaluated without it (remembered root), after the data moved (an error
    naming CMLGRAPH_DATA and --data-root), then with --data-root."""
    root = tmp_path / "data"
    (root / "planetoid").mkdir(parents=True)
    for f in shared_cora:
        (root / "planetoid" / f.name).symlink_to(f)
    monkeypatch.setenv("CMLGRAPH_DATA", str(root))
    cfg = Config()
    cfg.data.graph, cfg.data.ways, cfg.data.shots, cfg.data.queries = "cora", 2, 2, 3
    cfg.train.steps, cfg.train.val_every, cfg.train.val_tasks, cfg.train.test_tasks = 2, 2, 2, 4
    cfg.run.runs_dir, cfg.run.name = str(tmp_path / "runs"), "cora"
    run, summary = train(cfg, progress=False)
    assert summary["provenance"]["data_root"] == str(root)
    monkeypatch.delenv("CMLGRAPH_DATA")
    assert reevaluate(run)["mean"] == pytest.approx(summary["mean"], abs=1e-6)
    assert resolve_graph(run).num_nodes == 2708  # predict and embed remember it too
    monkeypatch.setenv("CMLGRAPH_DATA", str(tmp_path))  # the variable points elsewhere: the run's root is named
    with pytest.raises(DataError, match=f"CMLGRAPH_DATA.*--data-root {root}"):
        reevaluate(run)
    monkeypatch.delenv("CMLGRAPH_DATA")
    moved = tmp_path / "moved"
    os.rename(root, moved)
    assert _cli(["eval", run]) != 0
    err = capsys.readouterr().err
    assert "CMLGRAPH_DATA" in err and "--data-root" in err
    assert _cli(["eval", run, "--data-root", moved]) == 0
    assert f"{summary['mean']:.4f}" in capsys.readouterr().out


@pytest.fixture()
def shared_cora():
    from pathlib import Path

    folder = Path(os.environ.get("CMLGRAPH_DATA") or "/work/shared/datasets") / "planetoid"
    files = sorted(folder.glob("ind.cora.*"))
    if not files:
        pytest.skip(f"Cora's Planetoid files are not under {folder}")
    return files
