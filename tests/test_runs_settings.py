"""`cmlgraph runs` shows the settings that tell listed runs apart (issue 19 item 6: compare's and train's Cora runs
differed only in their features and were listed with identical columns)."""

from __future__ import annotations

import json

import pytest
import yaml

from cmlgraph.cli import main
from cmlgraph.runs import format_settings, list_runs


def _run(root, name, data, summary=None, **sections):
    folder = root / name
    folder.mkdir(parents=True)
    cfg = {"data": {"task": "graph", "graph": "cora", "ways": 2, "shots": 3, **data},
           "algo": {"algo": "maml", "cml": True, "inner_lr": 0.5}, "train": {"steps": 10, "seed": 0},
           "run": {"name": name}, "model": {}}
    for section, values in sections.items():
        cfg[section].update(values)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps({"metric": "accuracy", "mean": 0.8, "ci95": 0.01,
                                                         "num_tasks": 500, **summary}))


def test_runs_list_the_settings_that_differ_between_runs_of_a_dataset(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    _run(runs, "compare-cora", {"features": "raw"}, {"features": "raw"}, run={"name": "x"})
    _run(runs, "train-cora", {"features": None}, {"features": "row"})  # unset: the summary has the resolved mode
    _run(runs, "legacy-cora", {}, None, algo={"inner_lr": 0.1})  # written before data.features: raw, unfinished
    _run(runs, "sine", {"task": "sinusoid", "features": None}, {"metric": "mse"})  # another task: its own group
    records = {r["name"]: r for r in list_runs(runs)}
    assert records["compare-cora"]["differs"] == {"features": "raw", "inner_lr": 0.5}
    assert records["train-cora"]["differs"] == {"features": "row", "inner_lr": 0.5}
    assert records["legacy-cora"]["differs"] == {"features": "raw", "inner_lr": 0.1}
    assert records["sine"]["differs"] == {}  # alone in its group: nothing to tell apart
    assert format_settings(records["train-cora"]) == "features=row inner_lr=0.5"
    from cmlgraph import cli

    monkeypatch.setattr(cli.console, "width", 250)  # one table row per line
    with pytest.raises(SystemExit) as exc:
        main(["runs", str(runs)])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "settings that differ" in out
    rows = {name: next(ln for ln in out.splitlines() if f" {name} " in ln) for name in records}
    assert "features=raw" in rows["compare-cora"] and "features=row" in rows["train-cora"]


def test_runs_with_the_same_settings_show_no_settings_column(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs, "a", {"features": "row"}, {"features": "row"})
    _run(runs, "b", {"features": "row"}, {"features": "row"}, algo={"cml": False})  # CML has its own column
    assert all(r["differs"] == {} for r in list_runs(runs))
    with pytest.raises(SystemExit):
        main(["runs", str(runs)])
    assert "settings that differ" not in capsys.readouterr().out


def test_a_setting_an_unfinished_run_has_not_resolved_yet_is_no_difference(tmp_path):
    """A stopped default run (features unset, layers unset) beside a finished one of the same settings was listed
    as differing, features=raw against features=default (a new-user trial): it resolves them only when it starts,
    and records them at its end. Only a finished run's resolved values are compared."""
    runs = tmp_path / "runs"
    _run(runs, "done", {"features": None}, {"features": "raw", "layers": 4}, model={"layers": None})
    _run(runs, "stopped", {"features": None}, None, model={"layers": None})
    _run(runs, "deeper", {"features": None}, {"features": "raw", "layers": 3}, model={"layers": None})
    records = {r["name"]: r for r in list_runs(runs)}
    assert records["stopped"]["differs"] == {} and records["done"]["differs"] == {"layers": 4}
    assert records["deeper"]["differs"] == {"layers": 3}
