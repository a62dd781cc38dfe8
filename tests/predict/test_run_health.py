"""``adapt`` / ``cmlgraph predict RUN_DIR`` with a run below the training-free baseline say so, naming both numbers
(issue 17 item 4); run folders written before the check (no ``baseline_val``) stay silent."""

from __future__ import annotations

import io
import json
import shutil
import warnings

import pytest
from rich.console import Console

import cmlgraph
from cmlgraph.cli import main
from cmlgraph.predict import run_health

SUPPORT = {5: "cat", 17: "dog", 23: "cat", 40: "bird"}


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    """A finished run below sgc-proto on its validation tasks: one GCN feature, no adaptation."""
    cfg = cmlgraph.make_config(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3,
                               shots=2, queries=4, val_tasks=10, test_tasks=6, gnn="gcn", hidden=1, inner_lr=1e-6,
                               steps=1, val_every=1, runs_dir=str(tmp_path_factory.mktemp("runs")), name="weak")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, summary = cmlgraph.fit_config(cfg)
    assert summary["best_val"] < summary["baseline_val"]["val"]  # the construction holds
    return run, summary


def _numbers(summary: dict) -> tuple[str, str]:
    return f"{summary['best_val']:.4f}", f"{summary['baseline_val']['val']:.4f}"


def test_adapt_warns_in_python_naming_both_numbers(weak_run) -> None:
    run, summary = weak_run
    best, base = _numbers(summary)
    with pytest.warns(RuntimeWarning, match=rf"best validation accuracy {best} is below the training-free "
                                            rf"sgc-proto's {base} on the same validation tasks") as record:
        pred = cmlgraph.adapt(run, None, SUPPORT)
    assert len(pred.nodes) == 296
    assert [w.filename for w in record if "sgc-proto" in str(w.message)] == [__file__]  # the user's line


def test_adapt_prints_on_a_console_instead(weak_run) -> None:
    run, summary = weak_run
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # printed, not also warned
        cmlgraph.adapt(run, None, SUPPORT, console=Console(file=out, width=2000, soft_wrap=True))
    best, base = _numbers(summary)
    assert out.getvalue().startswith("warning: run weak: its best validation accuracy") and best in out.getvalue()
    assert base in out.getvalue() and "predict --method sgc-proto" in out.getvalue()


def test_cli_predict_shows_it(weak_run, tmp_path, capsys) -> None:
    run, summary = weak_run
    support = tmp_path / "labels.csv"
    support.write_text("node,label\n5,cat\n17,dog\n23,cat\n40,bird\n")
    with pytest.raises(SystemExit) as end, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["predict", str(run), "--support", str(support), "--out", str(tmp_path / "p.csv")])
    assert end.value.code == 0
    captured = capsys.readouterr()
    best, base = _numbers(summary)
    # a console line where the CLI passes its console to adapt, else Python's warning on stderr
    text = " ".join((captured.out + captured.err + " ".join(str(w.message) for w in caught)).split())
    assert f"best validation accuracy {best} is below the training-free sgc-proto's {base}" in text


def test_healthy_and_old_run_folders_are_silent(weak_run, tmp_path) -> None:
    run, _ = weak_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["baseline_val"]  # a folder written before the check
    (old / "summary.json").write_text(json.dumps(summary))
    healthy = tmp_path / "healthy"
    shutil.copytree(run, healthy)
    summary["baseline_val"] = {"method": "sgc-proto", "val": summary["best_val"], "settings": {"k": 2}}  # a tie
    (healthy / "summary.json").write_text(json.dumps(summary))
    skipped = tmp_path / "skipped"
    shutil.copytree(run, skipped)
    summary["baseline_val"] = {"method": "sgc-proto", "val": None, "skipped": "too large"}
    (skipped / "summary.json").write_text(json.dumps(summary))
    assert run_health(run) is not None
    for folder in (old, healthy, skipped):
        assert run_health(folder) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            cmlgraph.adapt(folder, None, SUPPORT)


def test_the_named_fix_works_on_a_registered_graph_and_on_a_users_own(weak_run, tmp_path) -> None:
    """The warning's command names a registered graph by name, and a user's own graph (a ``cmlgraph.fit`` run,
    no registered name: ``--graph mysbm`` failed with "unknown dataset") by the file it was saved to; its Python
    function is reachable as ``cmlgraph.predict_with_method`` (a new-user trial got AttributeError)."""
    run, _ = weak_run
    registered = " ".join(run_health(run).split())
    assert "`cmlgraph predict --method sgc-proto --graph synthetic --support CSV --out CSV`" in registered
    assert "cmlgraph.predict_with_method('sgc-proto', graph, support)" in registered
    own = tmp_path / "own"
    shutil.copytree(run, own)
    summary = json.loads((own / "summary.json").read_text())
    summary["dataset"] = "mysbm"
    (own / "summary.json").write_text(json.dumps(summary))
    text = " ".join(run_health(own).split())
    assert "--graph GRAPH.npz --support CSV --out CSV` (the graph saved with graph.save)" in text
    assert "--graph mysbm" not in text
    pred = cmlgraph.predict_with_method("sgc-proto", "synthetic", {0: "a", 1: "b", 2: "a", 3: "b"})
    assert len(pred.nodes) > 0
