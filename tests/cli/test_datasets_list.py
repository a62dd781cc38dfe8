"""`cmlgraph datasets list` shows each dataset's default class split (train/val/test classes), as the docs' dataset
table does (issue 19 item 11)."""

from __future__ import annotations

import pytest

from cmlgraph.cli import main
from cmlgraph.graphs import list_datasets
from cmlgraph.graphs.registry import REGISTRY


def test_datasets_list_shows_the_class_split_column(capsys, monkeypatch):
    from cmlgraph import cli

    monkeypatch.setattr(cli.console, "width", 250)  # one table row per line
    with pytest.raises(SystemExit) as exc:
        main(["datasets", "list"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "split (train/val/test)" in out
    rows = {r["name"]: r for r in list_datasets()}
    for name, spec in REGISTRY.items():
        line = next(ln for ln in out.splitlines() if f" {name} " in ln)
        split = str(spec.default_split)
        want = f"rest/{spec.params['num_val']}/test.mat" if split.startswith("gpn:") else split
        assert rows[name]["class_split"] == want and f" {want} " in line, name
        if not split.startswith("gpn:"):  # counts a/b/c: at most the dataset's classes
            assert sum(int(n) for n in want.split("/")) <= spec.stats["classes"], name
